"""scratch@<ds> (optional, off by default): a small CNN trained from random init, for comparison.

Reads scratch.enabled, scratch.epochs, scratch.lr, scratch.batch_size, scratch.image_size,
scratch.seed. Switched off it only writes metrics/<ds>/scratch.json = {"enabled": false}.
Switched on: images are resized to image_size, a four-stage CNN (SmallCNN) is trained with
random left-right flips, best epoch by validation loss. Writes {enabled, best_epoch, epochs_run,
val, test} to metrics/<ds>/scratch.json; evaluate copies `test` into metrics/<ds>.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from stages.comparisons import SmallCNN, class_targets, load_images, random_flip
from stages.embeddings import load_manifest, resolve_device
from stages.errors import run_stage
from stages.metrics import summary
from stages.outputs import write_json
from stages.params import load_params
from stages.training import fit_classifier, predict_proba, seeded


def main(ds: str) -> None:
    params = load_params()
    params.check_dataset(ds)
    cfg, out = params.scratch, Path("metrics") / ds / "scratch.json"
    if not cfg.enabled:
        write_json(out, {"enabled": False})
        return

    manifest, classes = load_manifest(Path("data/prepared") / ds)
    splits = {s: manifest[manifest.split == s] for s in ("train", "val", "test")}
    device = resolve_device()
    images = {s: load_images(rows.path.tolist(), cfg.image_size, desc=f"scratch {ds}: load {s}").to(device)
              for s, rows in splits.items()}
    targets = {s: class_targets(rows.label, classes).to(device) for s, rows in splits.items()}

    with seeded(cfg.seed):
        net = SmallCNN(len(classes)).to(device)
        history = fit_classifier(net, images["train"], targets["train"], images["val"], targets["val"], lr=cfg.lr,
                                 weight_decay=1e-4, batch_size=cfg.batch_size, max_epochs=cfg.epochs,
                                 patience=cfg.epochs, generator=torch.Generator().manual_seed(cfg.seed),
                                 augment=random_flip, desc=f"scratch {ds}")
    best = min(history, key=lambda r: r["val_loss"])
    test = summary(predict_proba(net, images["test"]), splits["test"].label.to_numpy(), classes)
    write_json(out, {"enabled": True, "image_size": cfg.image_size, "best_epoch": best["epoch"],
                     "epochs_run": len(history),
                     "val": {"loss": round(best["val_loss"], 6), "top1": round(best["val_accuracy"], 6)},
                     "test": test})
    print(f"scratch@{ds}: best epoch {best['epoch']}/{len(history)}, val top1 {best['val_accuracy']:.3f}, "
          f"test top1 {test['top1']:.4f}", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
