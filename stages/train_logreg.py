"""train_logreg@<ds>: logistic regression on the cached embeddings.

Reads logreg.c_min, logreg.c_max, logreg.c_steps, logreg.max_iter. C is picked by validation
accuracy, then the model is refit on train+val. Writes data/models/<ds>/logreg.npz (no pickle)
and metrics/<ds>/logreg_search.json (validation accuracy and log loss per C, a DVC plot).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from stages.embeddings import load_manifest, load_training_data
from stages.errors import run_stage
from stages.heads import LogRegHead, c_grid
from stages.outputs import write_json
from stages.params import load_params


def main(ds: str) -> None:
    params = load_params()
    params.check_dataset(ds)
    cfg = params.logreg

    manifest, classes = load_manifest(Path("data/prepared") / ds)
    X, y = load_training_data(Path("data/embeddings") / ds, manifest)

    head = LogRegHead(cs=tuple(c_grid(cfg.c_min, cfg.c_max, cfg.c_steps)), max_iter=cfg.max_iter)
    head.fit(X["train"], y["train"], X["val"], y["val"])
    missing = sorted(set(classes) - set(head.classes_))
    if missing:
        print(f"train_logreg@{ds}: warning: no training images for {', '.join(missing)}", file=sys.stderr)

    head.save(Path("data/models") / ds / "logreg.npz")
    # One row per C: a DVC plot of the search, not metrics (they would swamp `dvc metrics diff`).
    write_json(Path("metrics") / ds / "logreg_search.json", [
        {"C": round(c, 8), "val_accuracy": round(head.val_scores_[c], 6), "val_log_loss": round(head.val_log_loss_[c], 6),
         "within_one_se": head.val_scores_[c] >= max(head.val_scores_.values()) - head.val_tolerance_ - 1e-12,
         "chosen": c == head.C_}
        for c in head.val_scores_
    ])
    best = head.val_scores_.get(head.C_, float("nan"))
    print(f"train_logreg@{ds}: C={head.C_:.3g} (val top1 {best:.3f}), refit on {len(y['train']) + len(y['val'])} "
          f"images x {X['train'].shape[1]} dims", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
