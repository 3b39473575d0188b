"""Class names to column indices: the one mapping every head, metric and figure uses."""

from __future__ import annotations

import sys

import numpy as np

__all__ = ["class_index", "align_proba", "warn_missing_classes"]


def class_index(labels, classes) -> np.ndarray:
    """Index of each of ``labels`` in ``classes`` (int64); an unknown label is a ValueError."""
    index = {str(c): i for i, c in enumerate(classes)}
    try:
        return np.array([index[str(v)] for v in labels], dtype=np.int64)
    except KeyError as err:
        raise ValueError(f"label {err.args[0]!r} is not one of the model's classes") from None


def align_proba(proba: np.ndarray, head_classes, classes) -> np.ndarray:
    """``proba`` with columns in ``classes`` order (a head may lack classes it never saw: 0 there)."""
    full = np.zeros((len(proba), len(classes)))
    full[:, class_index(head_classes, classes)] = proba
    return full


def warn_missing_classes(stage: str, classes, trained_classes) -> None:
    """One stderr line when a head was trained without some of the dataset's classes."""
    missing = sorted(set(classes) - set(trained_classes))
    if missing:
        print(f"{stage}: warning: no training images for {', '.join(missing)}", file=sys.stderr)
