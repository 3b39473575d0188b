"""embed@<ds>: frozen-backbone embeddings of every manifest image, one .npy per split.

Reads backbone, embed.batch_size, embed.num_workers, embed.precision. Writes
data/embeddings/<ds>/{train,val,test}.npy (float32, rows in manifest order) and meta.json
(backbone, weights sha256, preprocessing, precision, hash of each split's image list).
``torchrun --nproc_per_node=N -m stages.embed <ds>`` shards the work (petprobe/embedding/distributed.py).
"""

from __future__ import annotations

import sys
import time

import torch

from petprobe.artefacts import SPLITS, Artefacts
from petprobe.backbones import get_backbone
from petprobe.checksums import image_list_sha256
from petprobe.device import resolve_batch_size, resolve_device, resolve_precision
from petprobe.embedding.distributed import distributed_run
from petprobe.embedding.embed import embed_images
from petprobe.errors import run_stage
from petprobe.params import load_params


def main(ds: str) -> None:
    params = load_params(dataset=ds)
    cfg = params.embed
    artefacts = Artefacts(ds)
    backbone = get_backbone(params.backbone)
    manifest, _ = artefacts.read_manifest()

    with distributed_run() as run:
        device = resolve_device(run.local_rank)
        precision = resolve_precision(cfg.precision, device)
        batch_size = resolve_batch_size(cfg.batch_size, device)
        model = backbone.build()
        meta = {"backbone": backbone.name, "weights": {"source": backbone.weights.source,
                                                       "sha256": backbone.weights.sha256},
                "preprocessing": backbone.preprocessing.as_dict(), "dim": backbone.dim, "precision": precision.name,
                "device": device.type, "processes": run.world_size, "torch": torch.__version__, "splits": {}}
        started = time.perf_counter()
        with run.output_dir(artefacts.embeddings) as tmp:
            for split in SPLITS:
                rows = manifest[manifest.split == split]
                shard = run.shard(len(rows), batch_size)
                blocks = embed_images(model, backbone.preprocessing, rows.path.tolist()[shard.start:shard.stop],
                                      batch_size=batch_size, num_workers=cfg.num_workers, device=device,
                                      precision=precision, desc=f"embed {ds}/{split}", progress=run.is_writer)
                run.write_rows(blocks, artefacts.split_npy(split, tmp) if tmp else None, n_rows=len(rows),
                               dim=backbone.dim, batch_size=batch_size, device=device)
                meta["splits"][split] = {"n": len(rows), "image_list_sha256": image_list_sha256(rows.path, rows.label)}
            if run.is_writer:
                artefacts.write_embeddings_meta(tmp, meta)
        seconds = time.perf_counter() - started
    if run.is_writer:
        rate = len(manifest) / max(seconds, 1e-9)
        print(f"embed@{ds}: {len(manifest)} images with {backbone.name} on {run.world_size}x {device.type}/"
              f"{precision.name}, batch {batch_size}, in {seconds:.1f}s ({rate:.1f} img/s)", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
