"""train_logreg@<ds>: logistic regression on the cached embeddings.

Reads logreg.c_min, logreg.c_max, logreg.c_steps, logreg.max_iter. C is picked by validation
accuracy, then the model is refit on train+val. Writes data/models/<ds>/logreg.npz (no pickle)
and metrics/<ds>/logreg_search.json (validation accuracy and log loss per C, a DVC plot).
"""

from __future__ import annotations

import math
import sys

from petprobe.artefacts import Artefacts
from petprobe.errors import run_stage
from petprobe.heads.logreg import LogRegHead, c_grid
from petprobe.labels import warn_missing_classes
from petprobe.outputs import write_json
from petprobe.params import load_params


def main(ds: str) -> None:
    params = load_params(dataset=ds)
    cfg, artefacts = params.logreg, Artefacts(ds)
    X, y, classes = artefacts.read_training_data()

    head = LogRegHead(cs=tuple(c_grid(cfg.c_min, cfg.c_max, cfg.c_steps)), max_iter=cfg.max_iter)
    head.fit(X["train"], y["train"], X["val"], y["val"])
    warn_missing_classes(f"train_logreg@{ds}", classes, head.classes_)

    head.save(artefacts.model("logreg"))
    # One row per C: a DVC plot of the search, not metrics (they would swamp `dvc metrics diff`).
    write_json(artefacts.logreg_search, [
        {"C": round(c, 8), "log10_C": round(math.log10(c), 4), "val_accuracy": round(head.val_scores_[c], 6), "val_log_loss": round(head.val_log_loss_[c], 6),
         "within_one_se": head.val_scores_[c] >= max(head.val_scores_.values()) - head.val_tolerance_ - 1e-12,
         "chosen": c == head.C_}
        for c in head.val_scores_
    ])
    best = head.val_scores_.get(head.C_, float("nan"))
    print(f"train_logreg@{ds}: C={head.C_:.3g} (val top1 {best:.3f}), refit on {len(y['train']) + len(y['val'])} "
          f"images x {X['train'].shape[1]} dims", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
