"""finetune@<ds> (optional, off by default): fine-tune the backbone's last block, for comparison.

Reads finetune.enabled, finetune.epochs, finetune.lr, finetune.batch_size, finetune.seed, backbone,
embed.batch_size, embed.num_workers, embed.precision. Switched off it only writes
metrics/<ds>/finetune.json = {"enabled": false}. Switched on: the trunk before the last block stays
frozen (its activations are computed once); the last block, the final conv and a linear layer are
trained, the linear layer starting from a logistic probe with logreg's chosen C. The heads' protocol:
the epoch count is chosen by validation loss on a run trained on train, then the net is trained
again on train+val (probe fit on train+val) for that many epochs and tested. Writes {enabled, backbone, best_epoch,
epochs_run, val_before, val, test} to metrics/<ds>/finetune.json; evaluate copies `test` into
metrics/<ds>.json.
"""

from __future__ import annotations

import copy
import sys

import numpy as np
import torch

from petprobe.artefacts import SPLITS, Artefacts
from petprobe.backbones import get_backbone
from petprobe.device import resolve_batch_size, resolve_device, resolve_precision
from petprobe.errors import PetprobeError, run_stage
from petprobe.heads.comparisons import FinetuneNet, train_comparison, trunk_activations
from petprobe.heads.logreg import LogRegHead
from petprobe.heads.registry import FINETUNE, LOGREG
from petprobe.labels import class_index
from petprobe.outputs import write_json
from petprobe.params import load_params


def main(ds: str) -> None:
    params = load_params(dataset=ds)
    cfg, embed, artefacts = params.finetune, params.embed, Artefacts(ds)
    if not cfg.enabled:
        write_json(artefacts.comparison(FINETUNE.name), {"enabled": False})
        print(f"finetune@{ds}: switched off (dvc exp run -S finetune.enabled=true)", file=sys.stderr)
        return

    manifest, _ = artefacts.read_manifest()
    splits = {s: manifest[manifest.split == s] for s in SPLITS}
    backbone = get_backbone(params.backbone)
    device = resolve_device()
    trunk, tail = backbone.split_last_block(backbone.build())
    acts = {s: trunk_activations(trunk, rows.path.tolist(), backbone.preprocessing,
                                 batch_size=resolve_batch_size(embed.batch_size, device), num_workers=embed.num_workers,
                                 precision=resolve_precision(embed.precision, device), device=device,
                                 desc=f"finetune {ds}: frozen trunk, {s}")
            for s, rows in splits.items()}

    tail = tail.to(device)
    with torch.no_grad():
        embeddings = {s: torch.cat([tail(a) for a in acts[s].split(256)]).cpu().numpy() for s in ("train", "val")}
    C = LogRegHead.load(artefacts.model(LOGREG.name)).C_

    def probe(fit_splits: tuple[str, ...]) -> LogRegHead:
        """logreg's C, fit on the splits the run trains on (train; then train+val for the refit)."""
        return LogRegHead(cs=(C,)).fit(np.concatenate([embeddings[s] for s in fit_splits]),
                                       np.concatenate([splits[s].label.to_numpy() for s in fit_splits]))

    classes = [str(c) for c in probe(("train",)).classes_]
    if set(classes) != set(manifest.label):
        raise PetprobeError(f"finetune@{ds}: every class needs training images")
    targets = {s: torch.as_tensor(class_index(rows.label, classes)).to(device) for s, rows in splits.items()}
    labels = {s: rows.label.to_numpy() for s, rows in splits.items()}

    # A fresh copy of the tail per run: the refit starts from the pretrained block, not the tuned one.
    make_net = lambda fit_splits: FinetuneNet(copy.deepcopy(tail), probe(fit_splits).to_module()).to(device)  # noqa: E731
    result = train_comparison(make_net, acts, targets, labels, classes,
                              lr=cfg.lr, weight_decay=0.0, batch_size=cfg.batch_size, epochs=cfg.epochs,
                              seed=cfg.seed, desc=f"finetune {ds}")
    write_json(artefacts.comparison(FINETUNE.name), {"enabled": True, "backbone": backbone.name, **result})
    print(f"finetune@{ds}: val top1 {result['val_before']['top1']:.3f} (probe) -> {result['val']['top1']:.3f} "
          f"(epoch {result['best_epoch']}); test top1 {result['test']['top1']:.4f}", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
