"""train_logreg@<ds>: the linear probe (Kornblith et al. 2019 protocol) on the cached embeddings.

Reads logreg.c_min, logreg.c_max, logreg.c_steps, logreg.max_iter, logreg.tol, logreg.cv_folds,
logreg.seed. C is chosen by stratified k-fold cross-validation over train+val on log-loss with the
one-SE rule (the smallest C whose mean fold log-loss is within one standard error of the lowest),
among the C whose fits converged in every fold, then the model is refit on train+val. Writes
data/models/<ds>/logreg.npz (no pickle) and metrics/<ds>/logreg_search.json: the rule, the chosen C,
whether it sits at an edge of the converged grid, the refit's iterations and convergence, and one
row per C (log10_C, mean and sd over folds of log-loss and accuracy, the most L-BFGS iterations of
its folds and whether every fold converged; a DVC plot).
"""

from __future__ import annotations

import sys

import numpy as np

from petprobe.artefacts import Artefacts
from petprobe.catalogue import LOGREG
from petprobe.errors import run_stage
from petprobe.heads.logreg import SELECTION_RULE, LogRegHead, c_grid, search_record
from petprobe.labels import warn_missing_classes
from petprobe.outputs import write_json
from petprobe.params import load_params


def main(ds: str) -> None:
    params = load_params(dataset=ds)
    cfg, artefacts = params.logreg, Artefacts(ds)
    X, y, classes = artefacts.read_training_data()
    # The CV folds cover train+val: one matrix, and the split arrays go at once (at full size they
    # would otherwise double the stage's largest array).
    X_dev, y_dev = np.concatenate([X.pop("train"), X.pop("val")]), np.concatenate([y["train"], y["val"]])

    cs = c_grid(cfg.c_min, cfg.c_max, cfg.c_steps)
    head = LogRegHead(cs=tuple(cs), max_iter=cfg.max_iter, tol=cfg.tol, cv_folds=cfg.cv_folds, random_state=cfg.seed)
    head.fit(X_dev, y_dev)
    warn_missing_classes(f"train_logreg@{ds}", classes, head.classes_)
    head.save(artefacts.model(LOGREG.name))

    search = search_record(head)
    write_json(artefacts.logreg_search, search)
    unconverged = [row["C"] for row in search.get("path", []) if not row["converged"]]
    edge = (f"; at the {head.C_at_grid_edge_} edge of the converged grid: widen it"
            if head.C_at_grid_edge_ != "no" else "")
    skipped = (f"; {len(unconverged)} C not converged within max_iter={cfg.max_iter} at tol={cfg.tol:g}, never chosen "
               f"({', '.join(f'{c:g}' for c in unconverged)})" if unconverged else "")
    print(f"train_logreg@{ds}: C={head.C_:.3g} by {SELECTION_RULE} ({search.get('folds', 0)} folds){edge}{skipped}; "
          f"refit on {len(y_dev)} images x {X_dev.shape[1]} dims in {head.n_iter_} iterations", file=sys.stderr)
    if not head.converged_:
        print(f"train_logreg@{ds}: warning: the refit at C={head.C_:.3g} did not converge within max_iter="
              f"{cfg.max_iter} (relative gradient {head.relative_gradient_:.2g} > tol {cfg.tol:g})", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
