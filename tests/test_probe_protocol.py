"""The numbers' protocol: the linear probe's choice of C, the 95% intervals, the per-class table."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from petprobe.heads.logreg import LogRegHead
from petprobe.reporting.metrics import per_class_report, summary, wilson_interval

CS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


def _one_informative_feature(n=80, d=40, seed=0):
    # Few images, many dimensions, one carrying the class: a tiny C predicts the prior, a large one
    # overfits the 39 noise dimensions, so the log-loss optimum lies inside the grid.
    rng = np.random.default_rng(seed)
    y = np.repeat(["Cat", "Dog"], n // 2)
    X = rng.normal(size=(n, d))
    X[:, 0] += np.where(y == "Dog", 1.0, -1.0)
    return X, y


def test_c_is_the_one_se_pick_of_fold_log_losses_computed_independently():
    X, y = _one_informative_feature()
    head = LogRegHead(cs=CS, cv_folds=5, random_state=0).fit(X[:60], y[:60], X[60:], y[60:])
    # The reference: cold sklearn fits of scaler + logistic regression on the same stratified folds.
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    reference = np.array([-cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=3000)),
                                           X, y, cv=folds, scoring="neg_log_loss") for C in CS]).T  # (folds, C)
    assert head.cv_log_loss_.shape == (5, len(CS))
    # Warm starts along the path stop at the solver tolerance from another point: close, not equal
    # (per fold up to 14% apart at C = 100, where the fit is nearly unregularised; 1% on the mean).
    np.testing.assert_allclose(head.cv_log_loss_[:, :-1], reference[:, :-1], rtol=2e-2)
    np.testing.assert_allclose(head.cv_log_loss_.mean(axis=0), reference.mean(axis=0), rtol=2e-2)
    mean = reference.mean(axis=0)
    best = int(np.argmin(mean))
    se = reference[:, best].std(ddof=1) / np.sqrt(5)
    one_se = min(C for C, m in zip(CS, mean) if m <= mean[best] + se)
    assert head.C_ == one_se and head.cv_log_loss_se_ == pytest.approx(se, rel=5e-2)
    assert CS[0] < head.C_ <= CS[best] < CS[-1] and head.C_at_grid_edge_ == ""
    # Refit on train+val, it predicts along the informative direction.
    assert head.predict(np.array([[3.0] + [0.0] * 39, [-3.0] + [0.0] * 39])).tolist() == ["Dog", "Cat"]


def test_labels_unrelated_to_the_features_pick_the_low_edge_and_say_so():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(60, 30)), np.repeat(["Cat", "Dog"], 30)
    head = LogRegHead(cs=CS, cv_folds=3).fit(X, y)
    assert head.C_ == CS[0] and head.C_at_grid_edge_ == "low"


def test_one_c_means_no_search():
    X, y = _one_informative_feature()
    head = LogRegHead(cs=(0.1,)).fit(X, y)
    assert head.C_ == 0.1 and head.C_at_grid_edge_ == "" and not hasattr(head, "cv_log_loss_")


def test_wilson_interval_matches_the_hand_computed_one():
    # 8 of 10: centre (0.8 + z^2/20) / (1 + z^2/10) = 0.71674, half-width
    # z / (1 + z^2/10) * sqrt(0.8 * 0.2 / 10 + z^2 / 400) = 0.22658, z = 1.959964.
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.49016, abs=1e-4) and hi == pytest.approx(0.94332, abs=1e-4)
    assert wilson_interval(10, 10)[1] == 1.0 and wilson_interval(0, 10)[0] == 0.0


def test_summary_intervals_hold_their_point_values():
    rng = np.random.default_rng(0)
    classes = ["a", "b", "c", "d", "e", "f"]
    y = np.array(classes)[rng.integers(0, 6, 57)]
    proba = rng.dirichlet(np.ones(6), size=57)
    proba[np.arange(40), np.searchsorted(classes, y[:40])] += 2.0  # 40 of 57 right, at least
    s = summary(proba / proba.sum(1, keepdims=True), y, classes)
    for key in ("top1", "balanced_accuracy"):
        lo, hi = s[f"{key}_ci95"]
        assert 0.0 <= lo < s[key] < hi <= 1.0
    assert s["top1_ci95"] == [round(v, 6) for v in wilson_interval(round(s["top1"] * 57), 57)]


def test_per_class_report_leaves_out_classes_without_test_images():
    classes = ["a", "b", "c"]
    proba = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1]])
    table = per_class_report(proba, ["a", "b", "b"], classes)
    assert table["class"].tolist() == ["a", "b"] and table.support.tolist() == [1, 2]
    assert table.recall.tolist() == [1.0, 0.5]


def test_standardise_in_place_is_bit_identical_to_standard_scaler():
    from sklearn.preprocessing import StandardScaler

    from petprobe.heads.logreg import standardise_in_place

    rng = np.random.default_rng(3)
    X = (rng.normal(size=(9000, 40)) * rng.uniform(0.1, 10, 40) + rng.uniform(-5, 5, 40)).astype(np.float32)
    X = X.astype(np.float64)
    X[:, 3] = 7.25  # a constant feature: scaled by 1, as scikit-learn does
    X_eval = rng.normal(size=(300, 40))
    reference = StandardScaler().fit(X)
    Z, Z_eval = X.copy(), X_eval.copy()
    scaler = standardise_in_place(Z, Z_eval)
    for name in ("mean_", "var_", "scale_"):
        assert np.array_equal(getattr(scaler, name), getattr(reference, name)), name
    assert scaler.scale_[3] == 1.0
    assert np.array_equal(Z, reference.transform(X)) and np.array_equal(Z_eval, reference.transform(X_eval))
