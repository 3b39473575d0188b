"""Metric values on small cases worked out by hand; the balanced-accuracy interval against scipy and by simulated coverage."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from petprobe.heads.metrics import (
    balanced_accuracy,
    balanced_accuracy_interval,
    confusion,
    expected_calibration_error,
    headline,
    log_loss,
    per_class_report,
    summary,
    top_k_accuracy,
    wilson_interval,
)

pytestmark = pytest.mark.unit

CLASSES = ["a", "b", "c"]
# Row by row: predicted class, and the true class's rank among the three.
PROBA = np.array([
    [0.7, 0.2, 0.1],  # true a: right (confidence 0.7)
    [0.5, 0.3, 0.2],  # true b: wrong, predicted a (0.5); b is 2nd
    [0.1, 0.3, 0.6],  # true c: right (0.6)
    [0.2, 0.5, 0.3],  # true c: wrong, predicted b (0.5); c is 2nd
    [0.1, 0.1, 0.8],  # true a: wrong, predicted c (0.8); a ties b at 0.1 and loses 2nd place (sklearn's rule)
])
Y = np.array(["a", "b", "c", "c", "a"])


def test_top_k_accuracy():
    assert top_k_accuracy(PROBA, Y, CLASSES, 1) == pytest.approx(2 / 5)
    # sklearn.metrics.top_k_accuracy_score breaks ties toward the later column: row 5 misses at k=2.
    assert top_k_accuracy(PROBA, Y, CLASSES, 2) == pytest.approx(4 / 5)
    assert top_k_accuracy(PROBA[:4], Y[:4], CLASSES, 2) == 1.0


def test_balanced_accuracy_is_the_mean_recall_per_class():
    # recall a = 1/2 (rows 1, 5), b = 0/1, c = 1/2 (rows 3, 4): mean 1/3, while top1 is 2/5.
    assert balanced_accuracy(PROBA, Y, CLASSES) == pytest.approx(1 / 3)


def test_log_loss():
    expected = -(math.log(0.7) + math.log(0.3) + math.log(0.6) + math.log(0.3) + math.log(0.1)) / 5
    assert log_loss(PROBA, Y, CLASSES) == pytest.approx(expected)


def test_expected_calibration_error():
    # Bins by confidence: {0.7: right} gap 0.3, {0.5, 0.5: both wrong} gap 0.5 (weight 2/5),
    # {0.6: right} gap 0.4, {0.8: wrong} gap 0.8 -> 0.3/5 + 2*0.5/5 + 0.4/5 + 0.8/5 = 0.5
    assert expected_calibration_error(PROBA, Y, CLASSES) == pytest.approx(0.5)
    assert expected_calibration_error(PROBA, Y, CLASSES, n_bins=10) == pytest.approx(0.5)
    # Confidence 0.5 and half right: perfectly calibrated.
    assert expected_calibration_error(np.full((2, 2), 0.5), ["a", "b"], ["a", "b"]) == pytest.approx(0.0)


def test_per_class_report_and_confusion():
    report = per_class_report(PROBA, Y, CLASSES).set_index("class")
    # predicted a, a, c, b, c: a is predicted twice (right once) and true twice (found once).
    assert report.loc["a", ["precision", "recall", "f1", "support"]].tolist() == [0.5, 0.5, 0.5, 2]
    assert report.loc["b", ["precision", "recall", "f1", "support"]].tolist() == [0.0, 0.0, 0.0, 1]
    assert report.loc["c", ["precision", "recall", "f1", "support"]].tolist() == [0.5, 0.5, 0.5, 2]
    frame = confusion(PROBA, Y, CLASSES)
    assert frame.actual.tolist() == Y.tolist()
    assert frame.predicted.tolist() == ["a", "a", "c", "b", "c"]


def test_summary_reports_top3_and_top5_only_beyond_five_classes():
    assert set(summary(PROBA, Y, CLASSES)) == {"top1", "top1_ci95", "balanced_accuracy", "balanced_accuracy_ci95",
                                               "log_loss", "ece"}
    six = [*CLASSES, "d", "e", "f"]
    padded = np.hstack([PROBA * 0.94, np.full((5, 3), 0.02)])
    s = summary(padded, Y, six)
    assert {"top3", "top5"} <= set(s) and s["top1"] == pytest.approx(0.4) and s["top3"] == 1.0


def test_unknown_label_is_an_error():
    with pytest.raises(ValueError, match="'z'"):
        top_k_accuracy(PROBA[:1], ["z"], CLASSES)


def test_headline_keeps_the_table_columns_and_their_intervals():
    numbers = {"top1": 0.9, "top1_ci95": [0.8, 0.95], "balanced_accuracy": 0.88, "top3": 1.0, "top5": 1.0,
               "log_loss": 0.3, "ece": 0.05, "C": 0.1}
    assert headline(numbers, 40) == {"n_test": 40, "top1": 0.9, "top1_ci95": [0.8, 0.95], "balanced_accuracy": 0.88,
                                     "log_loss": 0.3, "ece": 0.05}


# --- the balanced-accuracy interval: a reference on tiny cases and its coverage by simulation ---


def test_balanced_accuracy_interval_is_the_wilson_interval_at_the_effective_sample_size():
    # Classes of 10 and 5 images, 8 and 5 right: balanced accuracy (0.8 + 1) / 2 = 0.9, Kish's
    # n_eff = 2^2 / (1/10 + 1/5) = 13.333; Wilson at p = 0.9, n = 13.333, z = 1.959964:
    # centre (0.9 + z^2 / 2n) / (1 + z^2 / n) = 0.810533, half-width
    # z / (1 + z^2 / n) * sqrt(0.9 * 0.1 / n + z^2 / 4n^2) = 0.167734.
    lo, hi = balanced_accuracy_interval([8, 5], [10, 5])
    assert lo == pytest.approx(0.642799, abs=1e-6) and hi == pytest.approx(0.978266, abs=1e-6)
    # Equal class sizes: n_eff is the number of images, balanced accuracy is top-1, and the
    # interval is scipy's Wilson interval of top-1 (binomtest's proportion_ci).
    for correct, support in (([18, 20, 17], [20, 20, 20]), ([200, 199], [200, 200]), ([9, 10], [10, 10])):
        ci = stats.binomtest(sum(correct), sum(support)).proportion_ci(method="wilson")
        lo, hi = balanced_accuracy_interval(correct, support)
        assert (lo, hi) == pytest.approx((ci.low, ci.high), abs=1e-12)
        assert (lo, hi) == pytest.approx(wilson_interval(sum(correct), sum(support)), abs=1e-12)
    lo, hi = balanced_accuracy_interval([5, 5], [5, 5])
    assert hi == 1.0 and lo == pytest.approx(10 / (10 + stats.norm.ppf(0.975) ** 2))
    with pytest.raises(ValueError):
        balanced_accuracy_interval([3], [2])


def test_summary_reports_the_balanced_accuracy_interval_of_the_per_class_counts():
    # Recalls a 1/2, b 0/1, c 1/2 (see PROBA): counts correct (1, 0, 1) of support (2, 1, 2).
    s = summary(PROBA, Y, CLASSES)
    assert s["balanced_accuracy_ci95"] == [round(v, 6) for v in balanced_accuracy_interval([1, 0, 1], [2, 1, 2])]


def _coverage(support, accuracy, *, n_sets=20000, seed=0):
    """Share of ``n_sets`` simulated test sets whose 95% interval holds the true balanced accuracy."""
    support, accuracy = np.asarray(support), np.asarray(accuracy)
    correct = np.random.default_rng(seed).binomial(support, accuracy, size=(n_sets, len(support)))
    lo, hi = balanced_accuracy_interval(correct, np.broadcast_to(support, correct.shape))
    truth = accuracy.mean()
    return float(((lo <= truth) & (truth <= hi)).mean())


@pytest.mark.parametrize("support, accuracy", [
    ([200, 200], [0.995, 0.9975]),                              # catsdogs' sample: 400 test images, 1-2 errors
    ([200, 200], [0.995, 0.995]),
    ([10, 10, 10, 9, 9, 9], [0.93] * 6),                       # pets' sample: 57 images over 6 breeds
    ([10, 10, 10, 9, 9, 9], [1.0, 0.9, 0.95, 0.85, 0.95, 0.93]),
    ([12, 10, 10, 9, 8, 8], [1.0, 1.0, 0.9, 0.8, 0.9, 0.98]),   # unequal classes and accuracies
    ([99] * 37, [0.9] * 37),                                    # the official pets test split's shape
])
def test_balanced_accuracy_interval_covers_95_percent(support, accuracy):
    # 20,000 simulated test sets: the coverage estimate's own standard error is 0.15 points.
    assert 0.925 <= _coverage(support, accuracy) <= 0.975


@pytest.mark.parametrize("n_classes", [2, 7])
def test_metrics_equal_scikit_learn_on_random_predictions(n_classes):
    """Each figure evaluate reports against scikit-learn's own implementation, on 300 random predictions
    (every class present; ties are impossible with continuous probabilities)."""
    from sklearn import metrics as skm

    rng = np.random.default_rng(n_classes)
    classes = [f"class_{i}" for i in range(n_classes)]
    logits = rng.normal(size=(300, n_classes)) * 2
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    index = np.concatenate([np.arange(n_classes), rng.integers(0, n_classes, 300 - n_classes)])
    # Predictions better than chance, so the figures are not all near their chance values.
    proba[np.arange(150), index[:150]] += 1.0
    proba /= proba.sum(axis=1, keepdims=True)
    y = np.array(classes)[index]
    predicted = np.array(classes)[proba.argmax(axis=1)]
    labels = list(range(n_classes))
    assert top_k_accuracy(proba, y, classes, 1) == pytest.approx(skm.accuracy_score(y, predicted), abs=1e-12)
    if n_classes > 2:
        assert top_k_accuracy(proba, y, classes, 3) == pytest.approx(
            skm.top_k_accuracy_score(index, proba, k=3, labels=labels), abs=1e-12)
    assert balanced_accuracy(proba, y, classes) == pytest.approx(skm.balanced_accuracy_score(y, predicted), abs=1e-12)
    assert log_loss(proba, y, classes) == pytest.approx(skm.log_loss(index, proba, labels=labels), rel=1e-9)
    frame = confusion(proba, y, classes)
    np.testing.assert_array_equal(
        pd.crosstab(frame.actual, frame.predicted).reindex(index=classes, columns=classes, fill_value=0).to_numpy(),
        skm.confusion_matrix(y, predicted, labels=classes))
