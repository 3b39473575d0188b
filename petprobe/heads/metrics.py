"""Classification metrics computed from class probabilities.

All functions take ``proba`` (N, C) whose columns follow ``classes`` and true labels ``y`` (N,).
The standard ones are scikit-learn's (``sklearn.metrics``); the expected calibration error is ours.
Headline accuracies carry 95% intervals: Wilson score for top-1 (a binomial proportion; scipy's
``binomtest``) and, for balanced accuracy, the Wilson score interval at Kish's effective sample
size (``balanced_accuracy_interval``: balanced accuracy is the mean of per-image correctness
weighted 1/(C n_c), a stratified proportion; with equal class sizes it is top-1's interval).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from sklearn import metrics as skm

from petprobe.labels import class_index

__all__ = ["headline", "HEADLINE_KEYS", "SEED_KEYS", "seed_spread", "top_k_accuracy", "balanced_accuracy", "log_loss",
           "expected_calibration_error", "per_class_report", "confusion", "summary", "wilson_interval",
           "balanced_accuracy_interval"]


def top_k_accuracy(proba, y, classes, k: int = 1) -> float:
    """Share of rows whose true class is among the k most probable."""
    proba = np.asarray(proba)
    if k == 1:  # sklearn's top-k wants k < n_classes; top-1 is plain accuracy
        return float(skm.accuracy_score(class_index(y, classes), proba.argmax(axis=1)))
    return float(skm.top_k_accuracy_score(class_index(y, classes), proba, k=k, labels=np.arange(len(classes))))


def balanced_accuracy(proba, y, classes) -> float:
    """Mean per-class recall over the classes present in ``y``."""
    t, pred = class_index(y, classes), np.argmax(proba, axis=1)
    # sklearn averages over the classes present in y or in the predictions; recall is defined only
    # for the former, so the predictions of classes absent from y count as plain mistakes.
    present = np.unique(t)
    recalls = skm.recall_score(t, pred, labels=present, average=None, zero_division=0.0)
    return float(np.mean(recalls))


def log_loss(proba, y, classes) -> float:
    return float(skm.log_loss(class_index(y, classes), np.asarray(proba, np.float64), labels=np.arange(len(classes))))


def expected_calibration_error(proba, y, classes, n_bins: int = 15) -> float:
    """Top-label ECE: |accuracy - confidence| per equal-width confidence bin, weighted by bin size."""
    t = class_index(y, classes)
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
    """Precision, recall, F1 and support per class with test images (precision 0 where undefined).

    Classes without a test image are left out: their recall and F1 are undefined, and a row of
    zeros would read as a class the head always gets wrong.
    """
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        class_index(y, classes), np.argmax(proba, axis=1), labels=np.arange(len(classes)), zero_division=0.0)
    table = pd.DataFrame({"class": list(classes), "precision": np.round(precision, 6), "recall": np.round(recall, 6),
                          "f1": np.round(f1, 6), "support": support.astype(int)})
    return table[table.support > 0].reset_index(drop=True)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (it stays inside [0, 1] and holds k/n, even at 0 or n)."""
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def balanced_accuracy_interval(correct, support, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Interval of the balanced accuracy ``mean(correct / support)`` over classes (the last axis).

    Balanced accuracy is a proportion over the test images with weight 1/(C n_c) for an image of
    class c. Kish's effective sample size of those weights, ``n_eff = 1 / sum_c 1/(C^2 n_c)``, is the
    number of equally weighted images with the same variance when every class is as accurate as
    the mean; the interval is the Wilson score interval of the balanced accuracy at ``n_eff`` (the
    effective-sample-size method of survey statistics, Korn & Graubard 1998). With equal class
    sizes ``n_eff`` is the number of images and it is top-1's interval. Measured coverage of the
    95% interval (tests/test_metrics.py simulates it): 93.5% at 2 x 200 images with per-class
    accuracy 0.995 / 0.9975, 94-95% at 6 classes of 9-10 images around 0.93, and about 95% at 37
    x 99 from 0.8 to 0.999. Per class, a stratified bootstrap (63-91%) and Brodersen et al.'s Beta
    posterior (41-94%) cover less: a class without errors gives the bootstrap no variance, and the
    uniform prior pulls every small class toward 0.5 (the bias adds up over classes).

    ``correct`` and ``support`` hold per-class counts (support > 0); leading axes are batches.
    Returns ``(low, high)`` arrays of the leading shape (floats for 1-d input).
    """
    correct, support = np.asarray(correct, np.float64), np.asarray(support, np.float64)
    if np.any(support <= 0) or np.any(correct < 0) or np.any(correct > support):
        raise ValueError("balanced_accuracy_interval needs 0 <= correct <= support and support > 0 per class")
    n_classes = support.shape[-1]
    p = (correct / support).mean(axis=-1)
    n = 1.0 / (1.0 / support).sum(axis=-1) * n_classes ** 2
    z = stats.norm.ppf(0.5 + confidence / 2)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # Clipped: at p = 0 or 1 the formula lands on the bound up to rounding.
    return np.clip(centre - half, 0.0, p), np.clip(centre + half, p, 1.0)


def summary(proba, y, classes) -> dict:
    """The headline numbers of one head on one split (top3/top5 only with more than 5 classes),
    top-1 and balanced accuracy with 95% intervals ``*_ci95: [lo, hi]`` (Wilson; Wilson at the
    effective sample size, ``balanced_accuracy_interval``)."""
    t, pred = class_index(y, classes), np.argmax(proba, axis=1)
    support = np.bincount(t, minlength=len(classes))
    correct = np.bincount(t[t == pred], minlength=len(classes))
    present = support > 0
    low, high = balanced_accuracy_interval(correct[present], support[present])
    out = {"top1": top_k_accuracy(proba, y, classes, 1),
           "top1_ci95": wilson_interval(int((t == pred).sum()), len(t)),
           "balanced_accuracy": balanced_accuracy(proba, y, classes),
           "balanced_accuracy_ci95": (float(low), float(high))}
    if len(classes) > 5:  # with fewer, top5 is always 1 and top3 says little
        out["top3"] = top_k_accuracy(proba, y, classes, 3)
        out["top5"] = top_k_accuracy(proba, y, classes, 5)
    out["log_loss"] = log_loss(proba, y, classes)
    out["ece"] = expected_calibration_error(proba, y, classes)
    return {k: [round(x, 6) for x in v] if isinstance(v, tuple) else round(v, 6) for k, v in out.items()}


HEADLINE_KEYS = ("top1", "balanced_accuracy", "log_loss", "ece")
# Numbers whose spread over training seeds is reported.
SEED_KEYS = ("top1", "balanced_accuracy", "log_loss", "ece")


def seed_spread(per_seed: dict[int, dict]) -> dict:
    """``{n_seeds, seeds, <key>: {mean, sd, min, max, per_seed}}`` over the ``summary`` of each seed.

    sd is the sample standard deviation (ddof 1) of the seeds' values, the spread a rerun with a new
    seed would show; it is None with one seed. It measures training noise on a fixed test set, not
    the test-set sampling error, which each number's Wilson interval carries.
    """
    seeds = list(per_seed)
    out: dict = {"n_seeds": len(seeds), "seeds": seeds}
    for key in SEED_KEYS:
        values = np.array([per_seed[s][key] for s in seeds], np.float64)
        out[key] = {"mean": round(float(values.mean()), 6),
                    "sd": round(float(values.std(ddof=1)), 6) if len(values) > 1 else None,
                    "min": round(float(values.min()), 6), "max": round(float(values.max()), 6),
                    "per_seed": [round(float(v), 6) for v in values]}
    return out


def headline(numbers: dict, n_test: int) -> dict:
    """One head's headline (``headline@<ds>`` copies top1 and balanced accuracy into ``dvc metrics show``): n_test, HEADLINE_KEYS and their ``<key>_ci95`` intervals
    where ``numbers`` (a ``summary``) has them (lists: DVC's tables leave them out, the files keep them).

    One small file per head, so every row of the table shares the same few columns.
    """
    keys = [k for key in HEADLINE_KEYS for k in (key, f"{key}_ci95") if k in numbers]
    out = {"n_test": n_test, **{k: numbers[k] for k in keys}}
    if (seeds := numbers.get("seeds")) and seeds["n_seeds"] > 1:  # a head trained with several seeds
        out.update(n_seeds=seeds["n_seeds"], top1_seed_mean=seeds["top1"]["mean"], top1_seed_sd=seeds["top1"]["sd"])
    if calibration := numbers.get("calibration"):
        out.update(ece_uncalibrated=calibration["ece_uncalibrated"], temperature=calibration["temperature"])
    return out
