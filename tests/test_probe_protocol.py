"""The numbers' protocol: the linear probe's choice of C, the 95% intervals, the per-class table."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, logsumexp, softmax
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from petprobe.errors import PetprobeError
from petprobe.heads.logreg import LogRegHead, c_path_scores
from petprobe.heads.metrics import per_class_report, summary, wilson_interval

CS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


def _one_informative_feature(n=80, d=40, seed=0):
    # Few images, many dimensions, one carrying the class: a tiny C predicts the prior, a large one
    # overfits the 39 noise dimensions, so the log-loss optimum lies inside the grid.
    rng = np.random.default_rng(seed)
    y = np.repeat(["Cat", "Dog"], n // 2)
    X = rng.normal(size=(n, d))
    X[:, 0] += np.where(y == "Dog", 1.0, -1.0)
    return X, y


@pytest.mark.unit
def test_c_is_the_one_se_pick_of_fold_log_losses_computed_independently():
    X, y = _one_informative_feature()
    head = LogRegHead(cs=CS, cv_folds=5, random_state=0).fit(X[:60], y[:60], X[60:], y[60:])
    # The reference: cold sklearn fits of scaler + logistic regression on the same stratified folds,
    # each to an absolute tol of 1e-10 (its default, 1e-4, stops far from the optimum at large C).
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    reference = np.array([-cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(C=C, tol=1e-10,
                                                                                              max_iter=100_000)),
                                           X, y, cv=folds, scoring="neg_log_loss") for C in CS]).T  # (folds, C)
    assert head.cv_log_loss_.shape == (5, len(CS)) and head.C_converged_.all()
    # Warm starts along the path end within the relative tolerance of the same optimum.
    np.testing.assert_allclose(head.cv_log_loss_, reference, rtol=1e-3)
    mean = reference.mean(axis=0)
    best = int(np.argmin(mean))
    se = reference[:, best].std(ddof=1) / np.sqrt(5)
    one_se = min(C for C, m in zip(CS, mean) if m <= mean[best] + se)
    assert head.C_ == one_se and head.cv_log_loss_se_ == pytest.approx(se, rel=5e-2)
    assert CS[0] < head.C_ <= CS[best] < CS[-1] and head.C_at_grid_edge_ == "no"
    # Refit on train+val, it predicts along the informative direction.
    assert head.predict(np.array([[3.0] + [0.0] * 39, [-3.0] + [0.0] * 39])).tolist() == ["Dog", "Cat"]


@pytest.mark.unit
def test_labels_unrelated_to_the_features_pick_the_low_edge_and_say_so():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(60, 30)), np.repeat(["Cat", "Dog"], 30)
    head = LogRegHead(cs=CS, cv_folds=3).fit(X, y)
    assert head.C_ == CS[0] and head.C_at_grid_edge_ == "low"


@pytest.mark.unit
def test_one_c_means_no_search():
    X, y = _one_informative_feature()
    head = LogRegHead(cs=(0.1,)).fit(X, y)
    assert head.C_ == 0.1 and head.C_at_grid_edge_ == "no" and not hasattr(head, "cv_log_loss_")


@pytest.mark.unit
def test_wilson_interval_matches_the_hand_computed_one():
    # 8 of 10: centre (0.8 + z^2/20) / (1 + z^2/10) = 0.71674, half-width
    # z / (1 + z^2/10) * sqrt(0.8 * 0.2 / 10 + z^2 / 400) = 0.22658, z = 1.959964.
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.49016, abs=1e-4) and hi == pytest.approx(0.94332, abs=1e-4)
    assert wilson_interval(10, 10)[1] == 1.0 and wilson_interval(0, 10)[0] == 0.0


@pytest.mark.unit
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


@pytest.mark.unit
def test_per_class_report_leaves_out_classes_without_test_images():
    classes = ["a", "b", "c"]
    proba = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1]])
    table = per_class_report(proba, ["a", "b", "b"], classes)
    assert table["class"].tolist() == ["a", "b"] and table.support.tolist() == [1, 2]
    assert table.recall.tolist() == [1.0, 0.5]


@pytest.mark.unit
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


# --- convergence: the fitted coefficients are the optimum's, checked against independent fits ---


def _reference_fit(Z, y, C):
    """The optimum of scikit-learn's objective, summed over rows (n times it: the same minimiser):
    sum of cross-entropies + ||W||^2 / 2C, intercept unpenalised, by damped Newton steps with the
    exact Hessian (no L-BFGS involved), to a gradient of 1e-6 relative to the penalty's (100x tighter
    than the head's default tol, near where float64 rounding stops these small problems)."""
    classes = np.unique(y)
    Y = (y[:, None] == classes[None, :]).astype(float)
    k = 1 if len(classes) == 2 else len(classes)  # two classes: scikit-learn's single logistic row
    T = Y[:, 1:] if k == 1 else Y
    Xt = np.hstack([Z, np.ones((len(Z), 1))])  # the intercept as a last, unpenalised column
    penalty = np.ones(Xt.shape[1]) / C
    penalty[-1] = 0.0

    def value(theta):
        scores = Xt @ theta.T
        loss = (np.logaddexp(0, scores) - T * scores).sum() if k == 1 else \
            (logsumexp(scores, axis=1) - (T * scores).sum(axis=1)).sum()
        return loss + 0.5 * np.sum(penalty * theta ** 2)

    theta = np.zeros((k, Xt.shape[1]))
    for _ in range(100):
        scores = Xt @ theta.T
        P = expit(scores) if k == 1 else softmax(scores, axis=1)
        grad = (P - T).T @ Xt + penalty * theta
        W = theta[:, :-1]
        if np.linalg.norm(grad) * C <= 1e-6 * max(np.linalg.norm(W), 1e-12):
            return W, theta[:, -1]
        # Hessian of the summed cross-entropy: sum_n (diag(p_n) - p_n p_n^T) (x) x_n x_n^T.
        if k == 1:
            H = np.einsum("n,ni,nj->ij", (P * (1 - P))[:, 0], Xt, Xt)[None, :, None, :]
        else:
            H = (np.einsum("na,ab,ni,nj->aibj", P, np.eye(k), Xt, Xt, optimize=True)
                 - np.einsum("na,nb,ni,nj->aibj", P, P, Xt, Xt, optimize=True))
        size = theta.size
        H = H.reshape(size, size) + np.diag(np.tile(penalty, k))
        step = -np.linalg.lstsq(H, grad.ravel(), rcond=None)[0].reshape(theta.shape)
        t, start = 1.0, value(theta)
        while value(theta + t * step) > start + 1e-4 * t * np.sum(grad * step) and t > 1e-10:
            t /= 2
        theta = theta + t * step
    raise AssertionError("the Newton reference did not converge")


@pytest.mark.integration
@pytest.mark.parametrize("n_classes, dims", [(2, 40), (3, 40), (3, 90)])
@pytest.mark.parametrize("C", [0.01, 1.0, 100.0, 1e4])
def test_fitted_coefficients_are_the_optimum_at_every_c(n_classes, dims, C):
    # 60 images, 40 or 90 dimensions (more than images: fitted in the images' row space):
    # separable, so at large C the optimum's ||W|| is large and the objective flat; scikit-learn's
    # default tol stopped there far from it (C >= 31.6 on pets).
    rng = np.random.default_rng(n_classes)
    y = np.repeat(np.arange(n_classes), 60 // n_classes)
    X = rng.normal(size=(60, dims)) + 1.5 * np.eye(dims)[y]
    head = LogRegHead(cs=(C,)).fit(X, y)
    assert head.converged_ and head.relative_gradient_ <= head.tol
    Z = StandardScaler().fit_transform(X)
    W, b = _reference_fit(Z, y, C)
    # Within the tolerance's bound (relative distance <= tol = 1e-4) of the reference optimum.
    assert np.linalg.norm(head.coef_ - W) <= 2e-4 * np.linalg.norm(W)
    scores = Z @ W.T + b
    reference = softmax(scores, axis=1) if len(W) > 1 else np.column_stack([expit(-scores[:, 0]), expit(scores[:, 0])])
    np.testing.assert_allclose(head.predict_proba(X), reference, atol=1e-3)
    # And scikit-learn itself at an absolute tol of 1e-10 (its objective's gradient, per component).
    tight = LogisticRegression(C=C, tol=1e-10, max_iter=100_000).fit(Z, y)
    assert np.linalg.norm(head.coef_ - tight.coef_) <= 2e-4 * np.linalg.norm(tight.coef_)


@pytest.mark.unit
def test_the_default_tolerance_of_scikit_learn_stops_far_from_the_optimum():
    # What the plateau was: at tol 1e-4, C = 1e4 and C = 100 give nearly the same coefficients, far from the optimum.
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(3), 20)
    Z = StandardScaler().fit_transform(rng.normal(size=(60, 40)) + 1.5 * np.eye(40)[y])
    W, _ = _reference_fit(Z, y, 1e4)
    loose = LogisticRegression(C=1e4).fit(Z, y)
    assert np.linalg.norm(loose.coef_ - W) > 0.05 * np.linalg.norm(W)
    head = LogRegHead(cs=(1e4,)).fit(Z, y)
    assert np.linalg.norm(head.coef_ - W) <= 2e-4 * np.linalg.norm(W)


@pytest.mark.unit
def test_rows_that_did_not_converge_are_flagged_and_never_chosen():
    X, y = _one_informative_feature()
    # 8 L-BFGS iterations: the strongly regularised fits converge, the weakly regularised ones cannot.
    head = LogRegHead(cs=CS, max_iter=8, cv_folds=3).fit(X, y)
    assert head.cv_n_iter_.shape == head.cv_converged_.shape == (3, len(CS))
    assert head.C_converged_.any() and not head.C_converged_.all()
    assert (head.cv_n_iter_[~head.cv_converged_] <= 8).all()
    assert head.C_converged_[list(CS).index(head.C_)]
    with pytest.raises(PetprobeError, match="no C of the grid converged"):
        LogRegHead(cs=(10.0, 100.0), max_iter=2, cv_folds=3).fit(X, y)


@pytest.mark.unit
def test_path_scores_with_fewer_images_than_dimensions_equal_full_space_fits():
    # 45 training images in 120 dimensions: the path fits in the images' row space (45 columns).
    rng = np.random.default_rng(5)
    y = np.repeat(["a", "b", "c"], 20)
    X = rng.normal(size=(60, 120)) + 1.2 * np.eye(120)[np.searchsorted(["a", "b", "c"], y)]
    train, held = np.r_[0:15, 20:35, 40:55], np.r_[15:20, 35:40, 55:60]
    scores = c_path_scores(X[train], y[train], X[held], y[held], CS)
    scaler = StandardScaler().fit(X[train])
    for i, C in enumerate(CS):
        model = LogisticRegression(C=C, tol=1e-10, max_iter=100_000).fit(scaler.transform(X[train]), y[train])
        proba = model.predict_proba(scaler.transform(X[held]))
        loss = -np.log(proba[np.arange(len(held)), np.searchsorted(model.classes_, y[held])]).mean()
        assert scores.converged[i] and scores.log_loss[i] == pytest.approx(loss, rel=1e-3)
