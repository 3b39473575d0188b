"""Classification metrics computed from class probabilities, in plain numpy.

All functions take ``proba`` (N, C) whose columns follow ``classes`` and true labels ``y`` (N,).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["top_k_accuracy", "balanced_accuracy", "log_loss", "expected_calibration_error", "per_class_report",
           "confusion", "summary"]


def _targets(y, classes) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    try:
        return np.array([index[v] for v in y], dtype=np.int64)
    except KeyError as err:
        raise ValueError(f"label {err.args[0]!r} is not one of the model's classes") from None


def top_k_accuracy(proba, y, classes, k: int = 1) -> float:
    """Share of rows whose true class is among the k most probable (ties broken by column order)."""
    t = _targets(y, classes)
    top = np.argsort(-np.asarray(proba), axis=1, kind="stable")[:, :k]
    return float((top == t[:, None]).any(axis=1).mean())


def balanced_accuracy(proba, y, classes) -> float:
    """Mean per-class recall over the classes present in ``y``."""
    t = _targets(y, classes)
    pred = np.argmax(proba, axis=1)
    recalls = [float((pred[t == c] == c).mean()) for c in np.unique(t)]
    return float(np.mean(recalls))


def log_loss(proba, y, classes, eps: float = 1e-15) -> float:
    t = _targets(y, classes)
    p = np.clip(np.asarray(proba, np.float64)[np.arange(len(t)), t], eps, 1.0)
    return float(-np.log(p).mean())


def expected_calibration_error(proba, y, classes, n_bins: int = 15) -> float:
    """Top-label ECE: |accuracy - confidence| per equal-width confidence bin, weighted by bin size."""
    t = _targets(y, classes)
    proba = np.asarray(proba, np.float64)
    conf, pred = proba.max(axis=1), proba.argmax(axis=1)
    correct = (pred == t).astype(np.float64)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def confusion(proba, y, classes) -> pd.DataFrame:
    """One row per test image: actual and predicted class name (DVC's confusion template input)."""
    pred = np.asarray(classes)[np.argmax(proba, axis=1)]
    return pd.DataFrame({"actual": np.asarray(y), "predicted": pred})


def per_class_report(proba, y, classes) -> pd.DataFrame:
    """Precision, recall, F1 and support per class (0 where undefined)."""
    t = _targets(y, classes)
    pred = np.argmax(proba, axis=1)
    rows = []
    for c, name in enumerate(classes):
        tp = int(((pred == c) & (t == c)).sum())
        n_pred, n_true = int((pred == c).sum()), int((t == c).sum())
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_true if n_true else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"class": name, "precision": round(precision, 6), "recall": round(recall, 6),
                     "f1": round(f1, 6), "support": n_true})
    return pd.DataFrame(rows)


def summary(proba, y, classes) -> dict:
    """The headline numbers of one head on one split (top3/top5 only with more than 5 classes)."""
    out = {"top1": top_k_accuracy(proba, y, classes, 1), "balanced_accuracy": balanced_accuracy(proba, y, classes)}
    if len(classes) > 5:  # with fewer, top5 is always 1 and top3 says little
        out["top3"] = top_k_accuracy(proba, y, classes, 3)
        out["top5"] = top_k_accuracy(proba, y, classes, 5)
    out["log_loss"] = log_loss(proba, y, classes)
    out["ece"] = expected_calibration_error(proba, y, classes)
    return {k: round(v, 6) for k, v in out.items()}
