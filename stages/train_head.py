"""train_head@<ds>: a small torch head on the cached embeddings.

Reads head.hidden, head.dropout, head.lr, head.weight_decay, head.batch_size, head.max_epochs,
head.patience, head.refit, head.seed, head.spread_seeds. Writes data/models/<ds>/head.pt (state_dict)
+ head.json (config, class names, the temperature fitted on val), the model of head.seed that predict,
render and explain use; the same head trained with each of head.spread_seeds in
data/models/<ds>/head_seeds/seed<k>.pt (+ .json), for the spread over seeds evaluate reports; and, with DVCLive, metrics/<ds>/train_head/: per-epoch train/val loss and
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
from petprobe.outputs import atomic_dir
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
    # The same head with further seeds, only to measure the spread over seeds (evaluate).
    with atomic_dir(artefacts.seed_models(TORCH_HEAD.name)) as folder:
        for seed in cfg.spread_seeds:
            other = TorchHead(**{**head.get_params(), "random_state": seed})
            other.fit(X["train"], y["train"], X["val"], y["val"], desc=f"train_head {ds} seed {seed}")
            other.save(folder / f"seed{seed}.pt")
    write_curves(artefacts.train_head_log, head.history_, head.best_epoch_,
                 title=f"train_head@{ds}: hidden {cfg.hidden}, dropout {cfg.dropout}, lr {cfg.lr}"
                       + (" (then refit on train+val up to the best epoch)" if head.refit_ else ""),
                 refit=head.refit_)
    best = head.history_[head.best_epoch_ - 1]
    print(f"train_head@{ds}: best epoch {head.best_epoch_} of {len(head.history_)} (val loss "
          f"{best.get('val_loss', float('nan')):.4f}, val top1 {best.get('val_accuracy', float('nan')):.3f})"
          f"{'; saved model: refit on train+val for that many epochs' if head.refit_ else ''}; temperature "
          f"{head.temperature_:.3g} (fitted on val); {len(cfg.spread_seeds)} more seeds for the spread", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
