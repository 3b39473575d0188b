"""train_head@<ds>: a small torch head on the cached embeddings.

Reads head.hidden, head.dropout, head.lr, head.weight_decay, head.batch_size, head.max_epochs,
head.patience, head.refit, head.seed. Writes data/models/<ds>/head.pt (state_dict) + head.json
(config, class names) and, with DVCLive, metrics/<ds>/train_head/: per-epoch train/val loss and
accuracy (plots/metrics/*.tsv), a curves PNG (plots/images/curves.png) and metrics.json (the
early-stopping run's best epoch and its val numbers, labelled early_stopping_val_* when the saved
model is the train+val refit, whose own test numbers are in metrics/<ds>.json).
"""

from __future__ import annotations

import sys

from petprobe.artefacts import Artefacts
from petprobe.catalogue import TORCH_HEAD
from petprobe.errors import run_stage
from petprobe.heads.torch_head import TorchHead
from petprobe.labels import warn_missing_classes
from petprobe.params import load_params
from petprobe.reporting.curves import write_curves


def main(ds: str) -> None:
    params = load_params(dataset=ds)
    cfg, artefacts = params.head, Artefacts(ds)
    X, y, classes = artefacts.read_training_data()

    head = TorchHead(hidden=cfg.hidden, dropout=cfg.dropout, lr=cfg.lr, weight_decay=cfg.weight_decay,
                     batch_size=cfg.batch_size, max_epochs=cfg.max_epochs, patience=cfg.patience,
                     refit=cfg.refit, random_state=cfg.seed)
    head.fit(X["train"], y["train"], X["val"], y["val"], desc=f"train_head {ds}")
    warn_missing_classes(f"train_head@{ds}", classes, head.classes_)

    head.save(artefacts.model(TORCH_HEAD.name))
    write_curves(artefacts.train_head_log, head.history_, head.best_epoch_,
                 title=f"train_head@{ds}: hidden {cfg.hidden}, dropout {cfg.dropout}, lr {cfg.lr}"
                       + (" (then refit on train+val up to the best epoch)" if head.refit_ else ""),
                 refit=head.refit_)
    best = head.history_[head.best_epoch_ - 1]
    print(f"train_head@{ds}: best epoch {head.best_epoch_} of {len(head.history_)} (val loss "
          f"{best.get('val_loss', float('nan')):.4f}, val top1 {best.get('val_accuracy', float('nan')):.3f})"
          f"{'; saved model: refit on train+val for that many epochs' if head.refit_ else ''}", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
