"""embed@<ds>: frozen-backbone embeddings of every manifest image, one .npy per split.

Reads backbone, embed.batch_size, embed.num_workers, embed.precision. Writes
data/embeddings/<ds>/{train,val,test}.npy (float32, rows in manifest order) and meta.json
(backbone, weights sha256, preprocessing, precision, hash of each split's image list).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from stages.backbones import get_backbone
from stages.datasets import SPLITS
from stages.embeddings import embed_images, image_list_sha256, load_manifest, resolve_device, resolve_precision
from stages.errors import run_stage
from stages.outputs import atomic_dir, write_json
from stages.params import load_params


def main(ds: str) -> None:
    params = load_params()
    params.check_dataset(ds)
    cfg = params.embed
    backbone = get_backbone(params.backbone)
    device = resolve_device()
    precision = resolve_precision(cfg.precision, device)

    manifest, _ = load_manifest(Path("data/prepared") / ds)
    model = backbone.build()
    transforms = backbone.transforms()

    meta = {"backbone": backbone.name, "weights": {"source": backbone.weights.source, "sha256": backbone.weights.sha256},
            "preprocessing": backbone.preprocessing.as_dict(), "dim": backbone.dim, "precision": precision.name,
            "device": device.type, "torch": torch.__version__, "splits": {}}
    started, n_images = time.perf_counter(), 0
    with atomic_dir(Path("data/embeddings") / ds) as tmp:
        for split in SPLITS:
            rows = manifest[manifest.split == split]
            out = np.lib.format.open_memmap(tmp / f"{split}.npy", mode="w+", dtype=np.float32,
                                            shape=(len(rows), backbone.dim))
            embed_images(model, transforms, rows.path.tolist(), out, batch_size=cfg.batch_size,
                         num_workers=cfg.num_workers, device=device, precision=precision, desc=f"embed {ds}/{split}")
            out.flush()
            del out
            meta["splits"][split] = {"n": len(rows), "image_list_sha256": image_list_sha256(rows.path, rows.label)}
            n_images += len(rows)
        write_json(tmp / "meta.json", meta)
    seconds = time.perf_counter() - started
    print(f"embed@{ds}: {n_images} images with {backbone.name} on {device.type}/{precision.name} "
          f"in {seconds:.1f}s ({n_images / max(seconds, 1e-9):.1f} img/s)", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
