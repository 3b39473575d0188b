"""The embed stage scales: memory flat in the number of images, exact sharding over torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import PETIMAGES, REPO
from petprobe.embedding.distributed import shard_bounds


def stage_dir(root: Path, splits: dict[str, list[Path]], **embed) -> Path:
    """A working folder for ``python -m stages.embed catsdogs``: params.yaml and a prepared manifest."""
    prepared = root / "data" / "prepared" / "catsdogs"
    prepared.mkdir(parents=True)
    (root / "data" / "raw").mkdir()
    (root / "data" / "raw" / "catsdogs").symlink_to(PETIMAGES)  # manifest paths lie under data/raw/<ds>
    lines = ["path,label,split"] + [f"data/raw/catsdogs/{p.relative_to(PETIMAGES).as_posix()},{p.parent.name},{split}"
                                    for split, paths in splits.items() for p in paths]
    (prepared / "manifest.csv").write_text("\n".join(lines) + "\n")
    (prepared / "classes.json").write_text(json.dumps(["Cat", "Dog"]))
    params = {"datasets": ["catsdogs"], "backbone": "mobilenet_v2", "embed": {"num_workers": 0, **embed}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def run(args: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), **env}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.unit
@pytest.mark.parametrize("n_rows,batch_size,world_size", [(10, 4, 2), (3, 4, 2), (0, 4, 3), (100, 8, 3), (7, 1, 4)])
def test_shards_are_contiguous_disjoint_whole_batches_covering_every_row(n_rows, batch_size, world_size):
    shards = [shard_bounds(n_rows, batch_size, rank, world_size) for rank in range(world_size)]
    assert [i for shard in shards for i in shard] == list(range(n_rows))  # each row once, in order
    assert all(shard.start % batch_size == 0 for shard in shards if shard)


# Registers a backbone whose "embedding" is the normalised crop itself, 3*224*224 floats (588 KiB)
# a row, so that holding the rows in memory would show plainly in the peak RSS, then runs the
# real embed stage and prints the peak RSS in KiB.
_WIDE_EMBED = """
import resource, sys, torch.nn as nn
from petprobe.backbones import Backbone, get_backbone, register_backbone
register_backbone(Backbone("pixels", builder=lambda state_dict: nn.Flatten(),
                           weights=get_backbone("efficientnet_lite0").weights, dim=3 * 224 * 224,
                           feature_map=lambda net: net))  # never explained
import petprobe.catalogue as catalogue  # the names params.yaml may use
catalogue.BACKBONE_NAMES = (*catalogue.BACKBONE_NAMES, "pixels")
from stages.embed import main
main("catsdogs")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.integration
def test_embed_stage_streams_rows_to_disk_with_flat_peak_memory(tmp_path, cat_dog_images):
    peak_kib = {}
    for n in (40, 160):
        folder = stage_dir(tmp_path / str(n), {"train": (cat_dog_images * 20)[:n], "val": [], "test": []},
                           batch_size=8, precision="fp32")
        params = yaml.safe_load((folder / "params.yaml").read_text())
        (folder / "params.yaml").write_text(yaml.safe_dump({**params, "backbone": "pixels"}))
        peak_kib[n] = int(run([sys.executable, "-c", _WIDE_EMBED], folder).stdout.split()[-1])
        train = np.load(folder / "data" / "embeddings" / "catsdogs" / "train.npy", mmap_mode="r")
        assert train.shape == (n, 3 * 224 * 224)
        assert np.array_equal(train[8], train[0])  # rows in manifest order (the 8 photos repeat)
    held_rows_kib = (160 - 40) * 3 * 224 * 224 * 4 // 1024  # 70 MiB: what keeping the rows would cost
    assert peak_kib[160] - peak_kib[40] < held_rows_kib // 5, peak_kib


@pytest.mark.integration
def test_torchrun_two_processes_give_exactly_the_single_process_output(tmp_path, cat_dog_images):
    images = cat_dog_images
    # Uneven splits on purpose: with batches of 4, rank 0 gets no rows of val, all of test's 1 batch.
    splits = {"train": (images * 2)[:10], "val": images[:3], "test": images[3:8]}
    single = stage_dir(tmp_path / "single", splits, batch_size=4)
    sharded = stage_dir(tmp_path / "torchrun", splits, batch_size=4)
    threads = {"OMP_NUM_THREADS": "1"}  # the same kernels in both runs
    run([sys.executable, "-m", "stages.embed", "catsdogs"], single, **threads)
    done = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "-m", "stages.embed", "catsdogs"], sharded, **threads)
    assert "on 2x cpu" in done.stderr
    out = {name: folder / "data" / "embeddings" / "catsdogs" for name, folder in (("single", single),
                                                                                    ("torchrun", sharded))}
    for split, paths in splits.items():
        a, b = (np.load(out[name] / f"{split}.npy") for name in ("single", "torchrun"))
        assert a.shape == (len(paths), 1280) and np.array_equal(a, b), split
    meta = {name: json.loads((folder / "meta.json").read_text()) for name, folder in out.items()}
    assert meta["torchrun"].pop("processes") == 2 and meta["single"].pop("processes") == 1
    assert meta["torchrun"] == meta["single"]
    assert sorted(p.name for p in out["torchrun"].iterdir()) == ["meta.json", "test.npy", "train.npy", "val.npy"]
