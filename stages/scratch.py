"""scratch@<ds> (optional, off by default): a small CNN trained from random init, for comparison.

Reads scratch.enabled, scratch.epochs, scratch.lr, scratch.batch_size, scratch.image_size,
scratch.seed. Switched off it only writes metrics/<ds>/scratch.json = {"enabled": false}.
Switched on: images are resized to image_size, a four-stage CNN (SmallCNN) is trained with
random left-right flips; the epoch count is chosen by validation loss on a run trained on train,
then the net is trained again on train+val for that many epochs and tested. Writes {enabled, image_size, best_epoch,
epochs_run, val, test} to metrics/<ds>/scratch.json; evaluate copies `test` into metrics/<ds>.json.
"""

from __future__ import annotations

import sys

import torch
from torchvision.transforms import v2

from petprobe.artefacts import SPLITS, Artefacts
from petprobe.catalogue import SCRATCH
from petprobe.data.images import load_images
from petprobe.device import resolve_device
from petprobe.errors import run_stage
from petprobe.heads.comparisons import SmallCNN, random_flip, train_comparison
from petprobe.labels import class_index
from petprobe.outputs import write_json
from petprobe.params import load_params


def main(ds: str) -> None:
    params = load_params(dataset=ds)
    cfg, artefacts = params.scratch, Artefacts(ds)
    if not cfg.enabled:
        write_json(artefacts.comparison(SCRATCH.name), {"enabled": False})
        print(f"scratch@{ds}: switched off (dvc exp run -S scratch.enabled=true)", file=sys.stderr)
        return

    manifest, classes = artefacts.read_manifest()
    splits = {s: manifest[manifest.split == s] for s in SPLITS}
    device = resolve_device()
    # uint8 pixels, shorter side resized and centre-cropped: SmallCNN normalises them itself.
    resize = v2.Compose([v2.PILToTensor(), v2.Resize(cfg.image_size, antialias=True), v2.CenterCrop(cfg.image_size)])
    images = {s: load_images(rows.path.tolist(), resize, desc=f"scratch {ds}: load {s}").to(device)
              for s, rows in splits.items()}
    targets = {s: torch.as_tensor(class_index(rows.label, classes)).to(device) for s, rows in splits.items()}
    labels = {s: rows.label.to_numpy() for s, rows in splits.items()}

    result = train_comparison(lambda fit_splits: SmallCNN(len(classes)).to(device), images, targets, labels, classes,
                              lr=cfg.lr, weight_decay=1e-4, batch_size=cfg.batch_size, epochs=cfg.epochs,
                              seed=cfg.seed, augment=random_flip, desc=f"scratch {ds}")
    result.pop("val_before")  # a random network's val score says nothing here
    write_json(artefacts.comparison(SCRATCH.name), {"enabled": True, "image_size": cfg.image_size, **result})
    print(f"scratch@{ds}: best epoch {result['best_epoch']}/{result['epochs_run']}, val top1 "
          f"{result['val']['top1']:.3f}, test top1 {result['test']['top1']:.4f}", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
