"""What the logistic probe's converged C search costs, at the sample's size or a synthetic full size.

Not a test (minutes on 2 cores). It takes a dataset's train+val embeddings from the workspace run
(data/embeddings/<ds>, so run `dvc repro embed@<ds>` first) and, with ``--rows N``, grows them to N
rows: each new row is a random row of the same class plus Gaussian noise of ``--noise`` times each
feature's standard deviation (a stand-in for the full-size set, whose extra images are variants of
the sample's: benchmarks/scale.py). It then runs the C path of ``--folds-measured`` of the k CV
folds with params.yaml's logreg settings and prints, per fold, CPU and wall seconds, L-BFGS
iterations and the C that did not converge, and an estimate for the stage (k folds + the refit).

    python benchmarks/logreg_convergence.py --dataset pets --rows 3680        # full-size Oxford-IIIT Pet train+val
    python benchmarks/logreg_convergence.py --dataset catsdogs --rows 20000 --folds-measured 1

Timings depend on the machine's load: say what else ran.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.model_selection import StratifiedKFold

from petprobe.artefacts import Artefacts
from petprobe.heads.logreg import LogRegHead, c_grid, c_path_scores
from petprobe.params import load_params


def grown(X: np.ndarray, y: np.ndarray, rows: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """X and y with rows added up to ``rows``: copies of random rows of each class, plus noise."""
    rng = np.random.default_rng(seed)
    extra = rows - len(X)
    if extra <= 0:
        return X, y
    picks = rng.integers(0, len(X), extra)
    noisy = X[picks] + noise * X.std(axis=0) * rng.standard_normal((extra, X.shape[1])).astype(X.dtype)
    return np.concatenate([X, noisy]), np.concatenate([y, y[picks]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="pets")
    parser.add_argument("--rows", type=int, default=0, help="train+val rows (0: the sample's)")
    parser.add_argument("--noise", type=float, default=0.3)
    parser.add_argument("--folds-measured", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    cfg = load_params(dataset=args.dataset).logreg
    X, y, _ = Artefacts(args.dataset).read_training_data()
    X, y = np.concatenate([X["train"], X["val"]]), np.concatenate([y["train"], y["val"]])
    X, y = grown(X, y, args.rows, args.noise, args.seed)
    cs = c_grid(cfg.c_min, cfg.c_max, cfg.c_steps)
    print(f"{args.dataset}: {len(y)} rows x {X.shape[1]} dims, {len(np.unique(y))} classes; {len(cs)} C, "
          f"tol {cfg.tol:g}, max_iter {cfg.max_iter}")
    folds = StratifiedKFold(cfg.cv_folds, shuffle=True, random_state=cfg.seed).split(X, y)
    cpu_total = 0.0
    for k, (tr, ev) in zip(range(args.folds_measured), folds):
        cpu, wall = time.process_time(), time.perf_counter()
        scores = c_path_scores(X[tr], y[tr], X[ev], y[ev], cs, max_iter=cfg.max_iter, tol=cfg.tol)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        cpu_total += cpu
        bad = [f"{c:.3g}" for c, ok in zip(cs, scores.converged) if not ok]
        print(f"fold {k}: {cpu:.1f} s CPU, {wall:.1f} s wall, {int(scores.n_iter.sum())} iterations; "
              f"not converged: {', '.join(bad) or 'none'}; lowest eval log-loss at C = "
              f"{cs[int(np.argmin(scores.log_loss))]:.3g}")
    cpu, wall = time.process_time(), time.perf_counter()
    refit = LogRegHead(cs=(1.0,), max_iter=cfg.max_iter, tol=cfg.tol).fit(X, y)
    cpu = time.process_time() - cpu
    print(f"refit at C = 1: {cpu:.1f} s CPU, {time.perf_counter() - wall:.1f} s wall, {refit.n_iter_} iterations, "
          f"converged {refit.converged_}")
    print(f"stage estimate: {cpu_total / args.folds_measured * cfg.cv_folds + cpu:.0f} s CPU "
          f"({cfg.cv_folds} folds + refit)")


if __name__ == "__main__":
    main()
