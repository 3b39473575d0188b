"""Which rule should choose the linear probe's C? A measurement on repeated re-splits.

The dataset's train+val embeddings (from `dvc repro`; its test split is never touched) are split
``--repeats`` times at random (stratified, seed = repeat number) into a development part and a
held-out part (``--held-out`` of the images). Inside the development part a stratified 80/20
train/val split serves the single-split rules; the k-fold rules use all of it. Every rule picks a C
from the same grid (params.yaml: 45 values 1e-6 ... 1e5), the probe is refit on the whole
development part at that C, and scored on the held-out part. Printed: per rule, held-out top-1
and log-loss (mean ± sd over repeats), the mean paired difference in top-1 against today's rule
(plateau middle), and the median chosen C. Rules:

- best_val_accuracy: highest single-split val accuracy (ties: smallest C);
- one_se_most_regularised: the smallest C whose val accuracy is within one binomial SE of the best;
- plateau_middle: the middle of those C (petprobe's rule before issue 17), on the new grid;
- plateau_middle_old_grid: the same on the old grid (11 values 1e-4 ... 10, a subset of the new);
- best_val_log_loss: lowest single-split val log-loss;
- kfold_min_log_loss: lowest mean log-loss over stratified k folds;
- kfold_max_accuracy: highest mean accuracy over the same folds (ties: smallest C);
- kfold_log_loss_one_se: the smallest C whose mean fold log-loss is within one standard error
  (over folds) of the lowest (the one-SE rule of Hastie et al.; LogRegHead's rule).

    nice python benchmarks/probe_rules.py --dataset pets --repeats 20 --folds 5
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from sklearn.model_selection import train_test_split

from petprobe.artefacts import Artefacts
from petprobe.heads.logreg import LogRegHead, c_grid, c_path_scores, cv_path_scores
from petprobe.params import load_params

OLD_GRID = c_grid(1e-4, 10.0, 11)


def _plateau(cs, accuracy, n_val):
    best = accuracy.max()
    return np.sort(cs[accuracy >= best - np.sqrt(best * (1 - best) / n_val) - 1e-12])


def _one_se_of_min(fold_loss):
    mean = fold_loss.mean(axis=0)
    best = int(np.argmin(mean))
    se = fold_loss[:, best].std(ddof=1) / np.sqrt(len(fold_loss))
    return int(np.flatnonzero(mean <= mean[best] + se).min())


def choose(cs, val_acc, val_loss, n_val, cv_acc, cv_loss) -> dict[str, float]:
    """The C each rule picks; ``cs`` ascending."""
    old = np.isin(np.round(np.log10(cs), 6), np.round(np.log10(OLD_GRID), 6))
    middle = lambda p: float(p[(len(p) - 1) // 2])  # noqa: E731
    return {
        "best_val_accuracy": float(cs[np.argmax(val_acc)]),
        "one_se_most_regularised": float(_plateau(cs, val_acc, n_val)[0]),
        "plateau_middle": middle(_plateau(cs, val_acc, n_val)),
        "plateau_middle_old_grid": middle(_plateau(cs[old], val_acc[old], n_val)),
        "best_val_log_loss": float(cs[np.argmin(val_loss)]),
        "kfold_min_log_loss": float(cs[np.argmin(cv_loss.mean(axis=0))]),
        "kfold_max_accuracy": float(cs[np.argmax(cv_acc.mean(axis=0))]),
        "kfold_log_loss_one_se": float(cs[_one_se_of_min(cv_loss)]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="pets")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--held-out", type=float, default=0.25)
    args = parser.parse_args()

    cfg = load_params(dataset=args.dataset).logreg
    cs = np.sort(c_grid(cfg.c_min, cfg.c_max, cfg.c_steps))
    X, y, _ = Artefacts(args.dataset).read_training_data()
    X, y = np.concatenate([X["train"], X["val"]]).astype(np.float64), np.concatenate([y["train"], y["val"]])
    print(f"{args.dataset}: {len(y)} train+val images, {len(np.unique(y))} classes; {len(cs)} C values "
          f"{cs[0]:.0e} ... {cs[-1]:.0e}; {args.repeats} repeats, {args.held_out:.0%} held out, "
          f"{args.folds}-fold CV", file=sys.stderr)

    results: dict[str, list[tuple[float, float, float]]] = {}
    started = time.perf_counter()
    for repeat in range(args.repeats):
        dev, held = train_test_split(np.arange(len(y)), test_size=args.held_out, stratify=y, random_state=repeat)
        tr, va = train_test_split(dev, test_size=0.2, stratify=y[dev], random_state=repeat)
        val_acc, val_loss, *_ = c_path_scores(X[tr], y[tr], X[va], y[va], cs, max_iter=cfg.max_iter, tol=cfg.tol)
        cv_acc, cv_loss, *_ = cv_path_scores(X[dev], y[dev], cs, folds=args.folds, max_iter=cfg.max_iter, tol=cfg.tol,
                                             random_state=repeat)
        picks = choose(cs, val_acc, val_loss, len(va), cv_acc, cv_loss)
        scored = {}
        for C in sorted(set(picks.values())):  # one refit per distinct C
            head = LogRegHead(cs=(C,), max_iter=cfg.max_iter, tol=cfg.tol).fit(X[dev], y[dev])
            proba = head.predict_proba(X[held])
            index = np.searchsorted(head.classes_, y[held])
            scored[C] = (float((proba.argmax(axis=1) == index).mean()),
                         float(-np.log(np.clip(proba[np.arange(len(held)), index], 1e-15, 1)).mean()))
        for rule, C in picks.items():
            results.setdefault(rule, []).append((*scored[C], C))
        print(f"repeat {repeat + 1}/{args.repeats} ({time.perf_counter() - started:.0f} s): "
              + ", ".join(f"{r} C={c:.3g} top1={scored[c][0]:.3f}" for r, c in picks.items()), file=sys.stderr)

    baseline = np.array([r[0] for r in results["plateau_middle_old_grid"]])
    print(f"\n{args.dataset}, {args.repeats} re-splits of train+val, held-out n = {len(held)} per split, "
          f"{args.folds}-fold CV; ran {time.perf_counter() - started:.0f} s\n")
    print("| rule | held-out top-1 (mean ± sd) | held-out log-loss (mean ± sd) | top-1 − today's (mean ± sd) "
          "| median C |")
    print("|---|---|---|---|---|")
    for rule, rows in results.items():
        a = np.array(rows)
        diff = a[:, 0] - baseline
        print(f"| {rule} | {a[:, 0].mean():.4f} ± {a[:, 0].std(ddof=1):.4f} | {a[:, 1].mean():.4f} ± "
              f"{a[:, 1].std(ddof=1):.4f} | {diff.mean():+.4f} ± {diff.std(ddof=1):.4f} | {np.median(a[:, 2]):.3g} |")


if __name__ == "__main__":
    main()
