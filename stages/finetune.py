"""finetune@<ds> (optional, off by default): fine-tune the backbone's last block, for comparison.

Reads finetune.enabled, finetune.epochs, finetune.lr, finetune.batch_size, finetune.seed, backbone,
embed.batch_size, embed.num_workers, embed.precision. Switched off it only writes
metrics/<ds>/finetune.json = {"enabled": false}. Switched on: the trunk before the last block stays
frozen (its activations are computed once); the last block, the final conv and a linear layer are
trained, the linear layer starting from a logistic probe fit on the training split with
logreg's chosen C. Best epoch by validation loss. Writes {enabled, backbone, best_epoch,
epochs_run, val_before, val, test} to metrics/<ds>/finetune.json; evaluate copies `test` into
metrics/<ds>.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from stages.backbones import get_backbone
from stages.comparisons import FinetuneNet, class_targets, split_last_block, trunk_activations
from stages.embeddings import load_manifest, resolve_batch_size, resolve_device, resolve_precision
from stages.errors import PetprobeError, run_stage
from stages.heads import LogRegHead
from stages.metrics import summary
from stages.outputs import write_json
from stages.params import load_params
from stages.training import evaluate_classifier, fit_classifier, predict_proba, seeded


def main(ds: str) -> None:
    params = load_params()
    params.check_dataset(ds)
    cfg, out = params.finetune, Path("metrics") / ds / "finetune.json"
    if not cfg.enabled:
        write_json(out, {"enabled": False})
        return

    manifest, _ = load_manifest(Path("data/prepared") / ds)
    splits = {s: manifest[manifest.split == s] for s in ("train", "val", "test")}
    backbone = get_backbone(params.backbone)
    device = resolve_device()
    precision = resolve_precision(params.embed.precision, device)
    trunk, tail = split_last_block(backbone.build())
    batch_size = resolve_batch_size(params.embed.batch_size, device)
    acts = {s: trunk_activations(trunk, rows.path.tolist(), backbone.preprocessing, batch_size=batch_size,
                                 num_workers=params.embed.num_workers, precision=precision, device=device,
                                 desc=f"finetune {ds}: frozen trunk, {s}")
            for s, rows in splits.items()}

    tail = tail.to(device)
    with torch.no_grad():
        train_embeddings = torch.cat([tail(a) for a in acts["train"].split(256)]).cpu().numpy()
    logreg_c = LogRegHead.load(Path("data/models") / ds / "logreg.npz").C_
    probe = LogRegHead(cs=(logreg_c,)).fit(train_embeddings, splits["train"].label.to_numpy())
    classes = [str(c) for c in probe.classes_]
    if set(classes) != set(manifest.label):
        raise PetprobeError(f"finetune@{ds}: every class needs training images")
    targets = {s: class_targets(rows.label, classes).to(device) for s, rows in splits.items()}

    with seeded(cfg.seed):
        net = FinetuneNet(tail, probe.to_module()).to(device)
        val_before = evaluate_classifier(net, acts["val"], targets["val"])
        history = fit_classifier(net, acts["train"], targets["train"], acts["val"], targets["val"], lr=cfg.lr,
                                 weight_decay=0.0, batch_size=cfg.batch_size, max_epochs=cfg.epochs,
                                 patience=cfg.epochs, generator=torch.Generator().manual_seed(cfg.seed),
                                 desc=f"finetune {ds}")
    best = min(history, key=lambda r: r["val_loss"])
    test = summary(predict_proba(net, acts["test"]), splits["test"].label.to_numpy(), classes)
    write_json(out, {"enabled": True, "backbone": backbone.name, "best_epoch": best["epoch"],
                     "epochs_run": len(history),
                     "val_before": {"loss": round(val_before[0], 6), "top1": round(val_before[1], 6)},
                     "val": {"loss": round(best["val_loss"], 6), "top1": round(best["val_accuracy"], 6)},
                     "test": test})
    print(f"finetune@{ds}: val top1 {val_before[1]:.3f} (probe) -> {best['val_accuracy']:.3f} "
          f"(epoch {best['epoch']}); test top1 {test['top1']:.4f}", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
