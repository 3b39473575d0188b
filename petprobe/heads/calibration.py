"""Temperature scaling (Guo et al. 2017) and the reliability diagram's table.

Temperature scaling divides a classifier's logits by one scalar ``T > 0`` chosen to minimise the
negative log-likelihood of held-out labels: the ranking of classes (so every accuracy) is unchanged,
only the confidence moves. ``T > 1`` softens an over-confident model. The reliability table bins the
top-label confidence as ``metrics.expected_calibration_error`` does (equal-width bins), so the
diagram and the ECE describe the same bins.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from petprobe.labels import class_index

__all__ = ["fit_temperature", "nll_at_temperature", "reliability_table", "TEMPERATURE_BOUNDS"]

# Searched on log T: a hundredth to a hundred times the logits' scale covers any trained head.
TEMPERATURE_BOUNDS = (0.01, 100.0)


def nll_at_temperature(logits, labels, temperature: float) -> float:
    """Mean negative log-likelihood (nats) of integer ``labels`` under softmax(``logits`` / ``temperature``)."""
    logits = np.asarray(logits, np.float64)
    return float(-log_softmax(logits / temperature, axis=1)[np.arange(len(logits)), np.asarray(labels)].mean())


def fit_temperature(logits, labels) -> float:
    """The ``T`` in ``TEMPERATURE_BOUNDS`` minimising the mean NLL of ``labels`` under softmax(logits / T),
    or 1.0 (no scaling) when that minimum lies at a bound or the model makes no mistake on ``labels``.

    The NLL is convex in 1/T, so a bounded scalar search on log T finds the minimum (xatol 1e-6 on log T).
    A minimum at the bound means the labels do not pin T down: a validation set the model classifies
    without a mistake has its NLL falling all the way to T -> 0 (on 4 val images: T = 0.01, which then
    made every test mistake cost 100x its log-loss), so the logits are left as they are.
    """
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels)
    if (logits.argmax(axis=1) == labels).all():  # no mistake: the NLL decreases all the way to T -> 0
        return 1.0
    low, high = np.log(TEMPERATURE_BOUNDS)
    result = minimize_scalar(lambda log_t: nll_at_temperature(logits, labels, np.exp(log_t)),
                             bounds=(low, high), method="bounded", options={"xatol": 1e-6})
    if min(result.x - low, high - result.x) < 1e-3:
        return 1.0
    return float(np.exp(result.x))


def reliability_table(proba, y, classes, n_bins: int = 15) -> list[dict]:
    """One row per non-empty equal-width confidence bin: its range, image count, mean confidence, accuracy."""
    t, proba = class_index(y, classes), np.asarray(proba, np.float64)
    conf, correct = proba.max(axis=1), (proba.argmax(axis=1) == t)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    return [{"bin_low": round(b / n_bins, 6), "bin_high": round((b + 1) / n_bins, 6), "n": int((bins == b).sum()),
             "confidence": round(float(conf[bins == b].mean()), 6), "accuracy": round(float(correct[bins == b].mean()), 6)}
            for b in range(n_bins) if (bins == b).any()]
