"""Few-shot curves: test top-1 of the logistic and kNN probes trained on k labelled images per class.

The protocol of the CLIP / SimCLR / BYOL few-shot tables: for each k of ``shots`` (0 = every image),
``draws`` random draws of k images per class from the training pool (train+val; never the test
split), each probe fitted on the draw alone and scored on the whole test split; mean and sample sd
over the draws per k. A class with fewer than k images gives all it has (``n_train`` records the
draw's size). The logistic probe keeps one C for every draw, the C train_logreg chose on all of
train+val (tuning C inside a draw of 1-2 images per class is not possible): at small k a tuned C
could do better, so its curve is a lower bound there. kNN needs no tuning (k neighbours capped by
the draw's size). Draws come from one seeded generator, in the order shots x draws.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from petprobe.heads.metrics import top_k_accuracy
from petprobe.labels import align_proba

__all__ = ["draw_shots", "fewshot_rows", "fewshot_curve", "ALL"]

ALL = 0  # shots = 0: every image of the pool (one draw: there is nothing to draw)


def draw_shots(y, shots: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``shots`` images per class of ``y`` (all of a smaller class), drawn without replacement."""
    y = np.asarray(y)
    picked = [rng.choice(np.flatnonzero(y == c), size=min(shots, int((y == c).sum())), replace=False)
              for c in np.unique(y)]
    return np.sort(np.concatenate(picked))


def fewshot_rows(X_pool, y_pool, X_test, y_test, classes, probes: dict[str, Callable], *, shots, draws: int,
                 seed: int) -> list[dict]:
    """One row per probe x k x draw: ``{probe, shots, draw, n_train, top1, indices}`` (``indices``: the
    draw's rows of the pool, for checking; not written out). ``probes`` maps a name to a factory of an
    unfitted estimator with ``fit``/``predict_proba``/``classes_``."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in shots:
        for draw in range(1 if k == ALL else draws):
            idx = np.arange(len(y_pool)) if k == ALL else draw_shots(y_pool, k, rng)
            for name, make in probes.items():
                probe = make().fit(X_pool[idx], y_pool[idx])
                proba = align_proba(probe.predict_proba(X_test), probe.classes_, classes)
                rows.append({"probe": name, "shots": int(k), "draw": draw, "n_train": int(len(idx)),
                             "top1": round(top_k_accuracy(proba, y_test, classes, 1), 6), "indices": idx})
    return rows


def fewshot_curve(rows: list[dict], all_shots: float) -> list[dict]:
    """Per k: ``{shots, label, <probe>, <probe>_sd, <probe>_draws}`` (mean and sample sd of top-1 over the
    draws; sd 0 with one draw). ``all_shots`` stands for k = all on the plot's log axis (the mean
    number of pool images per class)."""
    curve = []
    for k in dict.fromkeys(r["shots"] for r in rows):
        point: dict = {"shots": round(float(all_shots), 3) if k == ALL else k, "label": "all" if k == ALL else str(k)}
        for name in dict.fromkeys(r["probe"] for r in rows):
            values = np.array([r["top1"] for r in rows if r["shots"] == k and r["probe"] == name])
            point.update({name: round(float(values.mean()), 6),
                          f"{name}_sd": round(float(values.std(ddof=1)), 6) if len(values) > 1 else 0.0,
                          f"{name}_draws": int(len(values))})
        curve.append(point)
    return curve
