"""One head's numbers on the test split: its summary, and what its registry entry adds.

A ``seeded`` head (``catalogue``) adds the spread of the summary over its training seeds; a
``calibrated`` one its temperature and the log-loss and ECE before and after temperature scaling,
with the reliability tables of both (for the diagram). Probabilities are aligned to the dataset's
classes (``labels.align_proba``) before anything is measured.
"""

from __future__ import annotations

import numpy as np

from petprobe.catalogue import HeadEntry
from petprobe.heads.calibration import reliability_table
from petprobe.heads.metrics import expected_calibration_error, log_loss, seed_spread, summary
from petprobe.labels import align_proba

__all__ = ["score_head"]


def score_head(entry: HeadEntry, heads: dict, X, y, classes) -> tuple[dict, np.ndarray, dict]:
    """``(numbers, proba, reliability)`` of head ``entry`` on ``(X, y)``: ``heads`` maps seed -> model,
    the saved model first (its numbers and probabilities are the head's; the others only add
    ``seeds``). ``reliability`` holds the before/after tables of a calibrated head ({} otherwise)."""
    saved, *_ = heads.values()
    proba = align_proba(saved.predict_proba(X), saved.classes_, classes)
    numbers, reliability = summary(proba, y, classes), {}
    if entry.calibrated:
        before = align_proba(saved.uncalibrated_proba(X), saved.classes_, classes)
        numbers["calibration"] = {
            "temperature": round(float(saved.temperature_), 6), "fitted_on": "val, early-stopping network",
            "probabilities": "calibrated (what predict prints; every number above)",
            "log_loss_uncalibrated": round(log_loss(before, y, classes), 6), "log_loss_calibrated": numbers["log_loss"],
            "ece_uncalibrated": round(expected_calibration_error(before, y, classes), 6),
            "ece_calibrated": numbers["ece"]}
        reliability = {"before temperature scaling": reliability_table(before, y, classes),
                       f"after (T = {saved.temperature_:.3g})": reliability_table(proba, y, classes)}
    if entry.seeded:
        numbers["seeds"] = seed_spread({int(seed): summary(align_proba(head.predict_proba(X), head.classes_, classes),
                                                           y, classes) for seed, head in heads.items()})
    return numbers, proba, reliability
