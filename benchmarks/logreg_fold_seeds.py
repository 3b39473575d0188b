"""How much does the logistic probe's chosen C move with the seed of its CV folds? A measurement.

train_logreg chooses C by stratified k-fold cross-validation over train+val (one-SE rule of the
mean fold log-loss), its folds assigned with ``logreg.seed``. This reruns that exact search
(``LogRegHead`` with params.yaml's grid, max_iter, tol and folds) for ``--seeds`` fold seeds on
the dataset's cached train+val embeddings (from `dvc repro`; the test split is never read) and
prints the C each seed chooses, its spread in decades (sd and range of log10 C) and the time per
search. Not part of `dvc repro`: one search costs minutes on the full pets sample on 2 shared
cores, so five of them would add far more than the pipeline's 20% budget for issue 31.

    nice python benchmarks/logreg_fold_seeds.py --dataset pets --seeds 5
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from petprobe.artefacts import Artefacts
from petprobe.heads.logreg import LogRegHead, c_grid
from petprobe.params import load_params


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="pets")
    parser.add_argument("--seeds", type=int, default=5, help="fold seeds 0 .. seeds-1 (0 is train_logreg's default)")
    args = parser.parse_args(argv)
    cfg = load_params(dataset=args.dataset).logreg
    X, y, _ = Artefacts(args.dataset).read_training_data()
    X_dev, y_dev = np.concatenate([X["train"], X["val"]]), np.concatenate([y["train"], y["val"]])
    chosen = []
    for seed in range(args.seeds):
        start = time.perf_counter()
        head = LogRegHead(cs=tuple(c_grid(cfg.c_min, cfg.c_max, cfg.c_steps)), max_iter=cfg.max_iter, tol=cfg.tol,
                          cv_folds=cfg.cv_folds, random_state=seed).fit(X_dev, y_dev)
        chosen.append(head.C_)
        print(f"fold seed {seed}: C = {head.C_:.4g} ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    logs = np.log10(chosen)
    print(f"{args.dataset}: {len(y_dev)} train+val images, {cfg.cv_folds} folds, {args.seeds} fold seeds: C "
          f"{', '.join(f'{c:.4g}' for c in chosen)}; log10 C sd {logs.std(ddof=1) if len(logs) > 1 else 0:.3f} "
          f"decades, range {logs.max() - logs.min():.3f} decades ({len(set(chosen))} distinct grid values)")


if __name__ == "__main__":
    main()
