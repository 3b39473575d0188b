"""Standardised multinomial logistic regression on frozen embeddings, saved without pickle.

The linear-probe protocol of Kornblith et al. 2019 (also SimCLR's and CLIP's): L-BFGS multinomial
logistic regression on standardised features, C on a wide log grid (45 values, 1e-6 ... 1e5), the
winner refit on train+val. ``LogRegHead`` chooses C by stratified k-fold cross-validation over
train+val on log-loss with the one-SE rule: the smallest C whose mean fold log-loss is within one
standard error of the lowest (``LogisticRegressionCV`` with ``scoring="neg_log_loss"`` computes
the same fold scores and takes their argmin); benchmarks/probe_rules.py compares
that rule with single-split ones on repeated re-splits of the pets sample (README). It follows
scikit-learn's estimator conventions (``fit``/``predict_proba``, ``classes_``, ``n_features_in_``)
and is saved as .npz, read back with ``allow_pickle=False``.

Convergence: scikit-learn's L-BFGS stops when the largest gradient component of its objective
(mean log-loss + ||W||^2 / (2 C n)) falls below its absolute ``tol`` (default 1e-4). At large C
the penalty's own gradient is far smaller than that, so from C = 31.6 on the pets sample it
stopped after about 11 iterations with ||W|| near 4.6 whatever C was: the "plateau" of identical
CV scores was that. Here a fit converges when the gradient is at most ``tol`` (default 1e-4) times
the penalty's gradient (``relative_gradient``), which bounds the coefficients' relative distance
from the optimum by ``tol``; every fit is resumed until it does or its iterations run out
(``_fit_checked``). Rows of the C search that did not converge in every fold are flagged and
never chosen.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from petprobe.artefacts import Artefacts, read_checked_npz
from petprobe.errors import PetprobeError, one_line
from petprobe.outputs import save_npz

__all__ = ["LogRegHead", "PathScores", "GRID_EDGES", "c_grid", "recorded_grid_edge", "search_record", "c_path_scores", "cv_path_scores", "relative_gradient",
           "SELECTION_RULE"]

SELECTION_RULE = "stratified_kfold_cv_log_loss_one_se"
# Where the chosen C sits in the converged grid: its one encoding, in memory, logreg_search.json and metrics/<ds>.json.
GRID_EDGES = ("no", "low", "high")


def c_grid(c_min: float, c_max: float, c_steps: int) -> np.ndarray:
    return np.logspace(np.log10(c_min), np.log10(c_max), c_steps)


DEFAULT_TOL = 1e-4


def _logistic(C: float, max_iter: int, warm_start: bool = False) -> LogisticRegression:
    return LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter, warm_start=warm_start)


def relative_gradient(model: LogisticRegression, Z: np.ndarray, y) -> float:
    """Norm of the gradient of ``model``'s objective at its fit, over the norm of the penalty's gradient.

    The objective is scikit-learn's: mean cross-entropy over the rows of Z + ||W||^2 / (2 C n), the
    intercept b unpenalised. Its gradient is ((P - Y)^T Z / n + W / (C n), mean of P - Y), with P the
    predicted probabilities and Y the one-hot labels (for two classes, scikit-learn's single
    logistic row: p(class 1) - y). The objective is strongly convex in W with modulus 1/(C n), so
    ||W - W*|| <= ||gradient|| C n: a value r bounds the coefficients' distance from the optimum by
    r ||W|| (exactly when the intercept's gradient is 0). Infinite at W = 0.
    """
    n = len(Z)
    proba = model.predict_proba(Z)
    residual = proba - (np.asarray(y)[:, None] == model.classes_[None, :])
    if model.coef_.shape[0] == 1:
        residual = residual[:, 1:]
    grad_coef = residual.T @ Z / n + model.coef_ / (model.C * n)
    gradient = np.sqrt(np.sum(grad_coef ** 2) + np.sum(residual.mean(axis=0) ** 2))
    penalty = np.linalg.norm(model.coef_) / (model.C * n)
    return float(gradient / penalty) if penalty > 0 else float("inf")


def _fit_checked(model: LogisticRegression, Z, y, max_iter: int, tol: float) -> tuple[int, bool, float]:
    """Fit ``model`` on (Z, y) until ``relative_gradient`` <= tol; return (iterations, converged, its value).

    scikit-learn's L-BFGS stops on the largest gradient component (its ``tol``, absolute) or on a
    step that lowers the objective by less than 64 machine epsilons. The penalty's gradient, the
    scale the optimum's gradient must be small against, is ||W|| / (C n): near 1 at small C, 1e-7 at
    C = 1e5 on a few hundred images. So the fit resumes (warm) with that tolerance a decade lower
    each time until the relative criterion holds; when ``max_iter`` iterations are spent or that
    tolerance falls below 1e-16 first (the objective is flat to machine precision), it did not converge.
    """
    model.set_params(warm_start=True)
    n = len(Z)
    start = getattr(model, "coef_", None)
    # The first target: the warm start's penalty gradient (the previous C's solution), else sklearn's default.
    penalty = np.linalg.norm(start) / (model.C * n) if start is not None else 0.0
    gtol, n_iter, ratio = min(1e-4, tol * penalty) if penalty > 0 else 1e-4, 0, float("inf")
    with warnings.catch_warnings():
        # Convergence is judged here, from the gradient itself, and recorded: not noise on stderr.
        warnings.simplefilter("ignore", ConvergenceWarning)
        while n_iter < max_iter and gtol >= 1e-16:
            model.set_params(tol=gtol, max_iter=max_iter - n_iter).fit(Z, y)
            n_iter += int(np.max(model.n_iter_))
            ratio = relative_gradient(model, Z, y)
            if ratio <= tol:
                return n_iter, True, ratio
            penalty = np.linalg.norm(model.coef_) / (model.C * n)
            gtol = min(gtol / 10, tol * penalty) if penalty > 0 else gtol / 10
    return n_iter, False, ratio


_BLOCK = 1024  # rows per block of the in-place passes and conversions (a 1280-d float64 block: 10 MB)


def standardise_in_place(Z: np.ndarray, *others: np.ndarray) -> StandardScaler:
    """``StandardScaler().fit(Z)``, then ``Z`` and ``others`` standardised with it, in place.

    The same arithmetic as scikit-learn's (two-pass mean and variance, near-constant features
    scaled by 1), so the numbers are bit-identical (a test checks it), without its temporaries:
    ``fit`` alone allocates a copy of Z (205 MB for the full-size PetImages train+val). Column sums
    run row by row in order, as numpy's own sums over axis 0 of a C-ordered array do.
    """
    n, d = Z.shape
    total = np.zeros(d)
    for row in Z:
        total += row
    mean = total / n
    correction, squares = np.zeros(d), np.zeros(d)
    for start in range(0, n, _BLOCK):
        block = Z[start:start + _BLOCK] - mean
        for row in block:
            correction += row
        block **= 2
        for row in block:
            squares += row
    var = (squares - correction ** 2 / n) / n
    eps = np.finfo(np.float64).eps
    scale = np.sqrt(var)
    scale[var <= n * eps * var + (n * mean * eps) ** 2] = 1.0  # sklearn's _is_constant_feature
    scaler = StandardScaler()
    scaler.mean_, scaler.var_, scaler.scale_, scaler.n_samples_seen_, scaler.n_features_in_ = mean, var, scale, n, d
    for X in (Z, *others):
        for start in range(0, len(X), _BLOCK):
            X[start:start + _BLOCK] -= mean
            X[start:start + _BLOCK] /= scale
    return scaler


class PathScores(NamedTuple):
    """Scores along a C path (one value per C, or (n_folds, n_C) arrays from ``cv_path_scores``)."""

    accuracy: np.ndarray
    log_loss: np.ndarray
    n_iter: np.ndarray  # L-BFGS iterations of the fit
    converged: np.ndarray  # bool: the gradient at the fit is within tol (module docstring)
    relative_gradient: np.ndarray  # relative_gradient of the fit


def c_path_scores(X, y, X_eval, y_eval, cs, *, max_iter: int = 3000, tol: float = DEFAULT_TOL,
                  classes=None) -> PathScores:
    """Accuracy and log-loss on (X_eval, y_eval) of a probe trained on (X, y) at each C, with each fit's
    iterations and convergence.

    Standardised on X. The fits run along ``cs`` in increasing order, each warm-started from the
    previous two solutions' extrapolation (the regularisation path): far fewer L-BFGS iterations than
    cold fits.
    ``classes`` (default: those of y and y_eval) fixes the log-loss columns, so an eval class the
    training part lacks costs -log(1e-15) instead of an error.
    """
    classes = np.unique(np.concatenate([y, y_eval])) if classes is None else np.asarray(classes)
    # Our own float64 copies, standardised in place (the caller's arrays are not touched).
    return _c_path_scores(np.array(X, np.float64), y, np.array(X_eval, np.float64), y_eval, cs, max_iter, tol,
                          classes)


def _c_path_scores(Z, y, Z_eval, y_eval, cs, max_iter, tol, classes) -> PathScores:
    """As c_path_scores, on float64 arrays this function owns: they are standardised in place, so a
    fold costs one float64 copy of its rows, not two."""
    cs = np.asarray(cs, np.float64)
    # One BLAS thread: these matrices are small (hundreds x ~1000), so threads cost more in start-up
    # and contention than they save; 20x slower measured with a loaded 2-core machine.
    with threadpool_limits(limits=1, user_api="blas"):
        standardise_in_place(Z, Z_eval)
        if (basis := _row_space(Z)) is not None:
            Z, Z_eval = Z @ basis, Z_eval @ basis
        eval_index = np.searchsorted(classes, y_eval)
        order = np.argsort(cs)
        out = PathScores(np.empty(len(cs)), np.empty(len(cs)), np.empty(len(cs), np.int64),
                         np.empty(len(cs), bool), np.empty(len(cs)))
        model = _logistic(float(cs[order[0]]), max_iter, warm_start=True)
        path: list[tuple[float, np.ndarray, np.ndarray]] = []  # (log C, coef, intercept) of the fits so far
        for i in order:
            if len(path) >= 2:
                # Start from the path's linear extrapolation in log C: about half the iterations of
                # starting from the previous solution (the path is smooth in log C).
                (a, coef_a, icpt_a), (b, coef_b, icpt_b) = path[-2:]
                step = (np.log(cs[i]) - b) / (b - a) if b > a else 0.0
                model.coef_, model.intercept_ = coef_b + step * (coef_b - coef_a), icpt_b + step * (icpt_b - icpt_a)
            fit = _fit_checked(model.set_params(C=float(cs[i])), Z, y, max_iter, tol)
            path = [*path[-1:], (float(np.log(cs[i])), model.coef_.copy(), model.intercept_.copy())]
            out.n_iter[i], out.converged[i], out.relative_gradient[i] = fit
            proba = np.zeros((len(Z_eval), len(classes)))
            proba[:, np.searchsorted(classes, model.classes_)] = model.predict_proba(Z_eval)
            out.accuracy[i] = float((proba.argmax(axis=1) == eval_index).mean())
            out.log_loss[i] = float(-np.log(np.clip(proba[np.arange(len(Z_eval)), eval_index], 1e-15, 1.0)).mean())
    return out


def _row_space(Z: np.ndarray) -> np.ndarray | None:
    """An orthonormal basis (d, n) of the row space of Z when it has fewer rows n than columns d, else None.

    The penalised optimum's coefficients lie in that space (every gradient of the loss does, and the
    L2 penalty only shrinks the rest to 0), so fitting on ``Z @ basis`` and mapping the coefficients
    back by ``basis.T`` gives the same optimum, the same predictions and the same relative gradient,
    with n instead of d columns: 4x less work per iteration on the pets sample (321 x 1280 folds).
    """
    if Z.shape[0] >= Z.shape[1]:
        return None
    return np.linalg.svd(Z, full_matrices=False)[2].T


def cv_path_scores(X, y, cs, *, folds: int, max_iter: int = 3000, tol: float = DEFAULT_TOL,
                   random_state=0) -> PathScores:
    """Per-fold ``PathScores`` of stratified k-fold CV over (X, y): each field (n_folds, len(cs)).

    Folds are capped by the smallest class (at least 2), as StratifiedKFold needs.
    """
    y = np.asarray(y)
    smallest = int(np.unique(y, return_counts=True)[1].min())
    splitter = StratifiedKFold(n_splits=max(2, min(folds, smallest)), shuffle=True, random_state=random_state)
    classes = np.unique(y)
    # Each fold's rows are copied once, straight to float64 (X itself may stay float32).
    scores = [_c_path_scores(_rows_float64(X, tr), y[tr], _rows_float64(X, ev), y[ev], cs, max_iter, tol, classes)
              for tr, ev in splitter.split(X, y)]
    return PathScores(*(np.array(field) for field in zip(*scores)))


def _rows_float64(X: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``X[rows]`` as a new float64 array, converted in blocks (no full-size float32 copy on the way)."""
    out = np.empty((len(rows), X.shape[1]), np.float64)
    for start in range(0, len(rows), _BLOCK):
        out[start:start + _BLOCK] = X[rows[start:start + _BLOCK]]
    return out


def _features(X) -> np.ndarray:
    X = np.asarray(X)
    return X if X.dtype in (np.float32, np.float64) else X.astype(np.float64)


class LogRegHead(ClassifierMixin, BaseEstimator):
    """Standardised multinomial logistic regression, C chosen by stratified k-fold CV (log-loss, one-SE rule).

    Parameters
    ----------
    cs : sequence of float
        Candidate inverse regularisation strengths; with one value there is no search.
    max_iter : int
        L-BFGS iteration limit per fit.
    tol : float
        A fit has converged when ``relative_gradient`` (the objective's gradient over the penalty's)
        is at most ``tol``: its coefficients are then within about ``tol`` (relative) of the optimum.
    cv_folds : int
        Folds of the C search (capped by the smallest class).
    random_state : int
        Seed of the fold assignment.

    After ``fit`` with several C: ``cv_accuracy_``, ``cv_log_loss_``, ``cv_n_iter_`` and
    ``cv_converged_`` (n_folds, n_C); ``C_converged_`` (n_C,), True where every fold converged;
    ``C_`` (among those, the smallest C whose mean fold log-loss is within ``cv_log_loss_se_``, one
    standard error over folds, of the lowest) and ``C_at_grid_edge_`` ("low" or "high" when the pick
    is the smallest or largest converged C of the grid, a sign the grid is too narrow; else "no"). Always:
    ``n_iter_`` and ``converged_`` of the final fit at ``C_``.
    """

    def __init__(self, cs=(0.01, 0.1, 1.0), max_iter: int = 3000, tol: float = DEFAULT_TOL, cv_folds: int = 5,
                 random_state: int = 0):
        self.cs = cs
        self.max_iter = max_iter
        self.tol = tol
        self.cv_folds = cv_folds
        self.random_state = random_state

    def fit(self, X, y, X_val=None, y_val=None) -> LogRegHead:
        """Choose C by k-fold CV over X (plus X_val when given: the folds cover train+val), refit on all of it."""
        # Embeddings stay in their float32 (half the memory of float64, the largest array of the
        # stage at full size); every fit gets its own float64 copy, so the numbers are those of an
        # all-float64 run.
        X, y = _features(X), np.asarray(y)
        if X_val is not None and len(X_val):
            X, y = np.concatenate([X, _features(X_val)]), np.concatenate([y, np.asarray(y_val)])
        cs = np.array([float(c) for c in self.cs])
        self.C_at_grid_edge_ = "no"
        if len(cs) > 1:
            scores = cv_path_scores(X, y, cs, folds=self.cv_folds, max_iter=self.max_iter, tol=self.tol,
                                    random_state=self.random_state)
            self.cv_accuracy_, self.cv_log_loss_ = scores.accuracy, scores.log_loss
            self.cv_n_iter_, self.cv_converged_ = scores.n_iter, scores.converged
            self.C_converged_ = scores.converged.all(axis=0)
            usable = np.flatnonzero(self.C_converged_)
            if not len(usable):
                raise PetprobeError(f"no C of the grid converged within max_iter={self.max_iter} at tol={self.tol:g}; "
                                    "raise logreg.max_iter or logreg.tol")
            # Log-loss, not accuracy: on a few dozen images per fold accuracy moves in steps of one
            # image and ties across decades of C; log-loss is smooth in C and rewards calibration.
            # Near its minimum it is flat, and its bare argmin moves by differences far inside the
            # spread over folds. So the one-SE rule (Hastie et al.): the most regularised C whose
            # mean fold log-loss is within one standard error (over folds) of the lowest. Only C
            # whose fits converged in every fold take part: an unconverged fit's score is the
            # optimiser's stopping point, not the model's.
            mean_loss = self.cv_log_loss_.mean(axis=0)
            best = usable[int(np.argmin(mean_loss[usable]))]
            self.cv_log_loss_se_ = float(self.cv_log_loss_[:, best].std(ddof=1) / np.sqrt(len(self.cv_log_loss_)))
            within = usable[mean_loss[usable] <= mean_loss[best] + self.cv_log_loss_se_]
            self.C_ = float(cs[within[np.argmin(cs[within])]])
            if len(cs) > 2 and self.C_ in (cs[usable].min(), cs[usable].max()):
                self.C_at_grid_edge_ = "low" if self.C_ == cs[usable].min() else "high"
        else:
            self.C_ = float(cs[0])
        Z = np.array(X, np.float64)  # converted straight from float32: no intermediate copy
        self.scaler_ = standardise_in_place(Z)
        model = _logistic(self.C_, self.max_iter)
        # One BLAS thread, as in the folds: 0.33 s per iteration with two threads on a loaded 2-core
        # machine, 0.05 s with one (3,680 x 1,280, 37 classes; benchmarks/logreg_convergence.py).
        with threadpool_limits(limits=1, user_api="blas"):
            basis = _row_space(Z)
            fit_on = Z if basis is None else Z @ basis
            self.n_iter_, self.converged_, self.relative_gradient_ = _fit_checked(model, fit_on, y, self.max_iter,
                                                                                  self.tol)
        self.classes_ = model.classes_
        self.n_features_in_ = X.shape[1]
        self.coef_ = model.coef_ if basis is None else model.coef_ @ basis.T
        self.intercept_ = model.intercept_
        return self

    def decision_function(self, X) -> np.ndarray:
        Z = (np.asarray(X, np.float64) - self.scaler_.mean_) / self.scaler_.scale_
        return Z @ self.coef_.T + self.intercept_

    def predict_proba(self, X) -> np.ndarray:
        scores = self.decision_function(X)
        if scores.shape[1] == 1:  # binary: sklearn stores one row for classes_[1]
            scores = np.hstack([-scores / 2, scores / 2])
        return softmax(scores, axis=1)

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def to_module(self):
        """A torch ``nn.Module`` mapping embeddings to logits whose softmax is ``predict_proba``.

        Standardisation is folded into one Linear layer, so the head can sit on top of a backbone
        for gradient-based work (rendering, attacks).
        """
        coef, intercept = self.coef_, self.intercept_
        if coef.shape[0] == 1:  # binary: the softmax of (-z/2, z/2) is sigmoid(z)
            coef, intercept = np.vstack([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
        weight = coef / self.scaler_.scale_
        bias = intercept - weight @ self.scaler_.mean_
        layer = torch.nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            layer.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
            layer.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
        return layer.eval().requires_grad_(False)

    def save(self, path: str | Path) -> None:
        save_npz(path, coef=self.coef_, intercept=self.intercept_, classes=np.asarray(self.classes_, dtype=str),
                 scaler_mean=self.scaler_.mean_, scaler_scale=self.scaler_.scale_, C=np.float64(self.C_),
                 cs=np.asarray(self.cs, np.float64), max_iter=np.int64(self.max_iter), tol=np.float64(self.tol))

    @classmethod
    def load(cls, path: str | Path) -> LogRegHead:
        """Read a file written by ``save``. No pickle: a tampered file is an error, never code."""
        rerun = "rerun train_logreg"
        try:
            arrays = read_checked_npz(path, _LOGREG_ARRAYS)
        except ValueError as err:
            raise PetprobeError(f"{path} is not a valid logistic-regression file ({one_line(err)}); {rerun}") from None
        coef, classes, mean = arrays["coef"], arrays["classes"], arrays["scaler_mean"]
        if (coef.shape[1] != mean.shape[0] or coef.shape[0] not in (1, len(classes))
                or arrays["intercept"].shape != (coef.shape[0],) or arrays["scaler_scale"].shape != mean.shape):
            raise PetprobeError(f"{path} has inconsistent array shapes; {rerun}")
        numbers = [arrays[k] for k in ("coef", "intercept", "scaler_mean", "scaler_scale", "C")]
        if not all(np.isfinite(a).all() for a in numbers):
            raise PetprobeError(f"{path} holds NaN or infinite values; {rerun}")
        head = cls(cs=tuple(arrays["cs"].tolist()), max_iter=int(arrays["max_iter"]), tol=float(arrays["tol"]))
        head.coef_, head.intercept_, head.classes_, head.C_ = coef, arrays["intercept"], classes, float(arrays["C"])
        head.n_features_in_ = coef.shape[1]
        head.scaler_ = StandardScaler()
        head.scaler_.mean_, head.scaler_.scale_ = mean, arrays["scaler_scale"]
        return head


# What LogRegHead.save writes: name -> (ndim, allowed dtype kinds). Checked on load, so a file with
# a swapped or foreign member fails with a clear line instead of somewhere inside numpy.
_LOGREG_ARRAYS = {"coef": (2, "f"), "intercept": (1, "f"), "classes": (1, "U"), "scaler_mean": (1, "f"),
                  "scaler_scale": (1, "f"), "C": (0, "f"), "cs": (1, "f"), "max_iter": (0, "iu"),
                  "tol": (0, "f")}



def search_record(head: LogRegHead) -> dict:
    """What a fitted ``head``'s C search found (``logreg_search.json``): the rule, the chosen C, whether
    it sits at an edge of the converged grid, the refit's iterations and convergence and, after a
    search over several C, the folds, the C not converged, the lowest-loss C, the one-SE margin and
    one ``path`` row per C (log10_C, mean and sd over folds of log-loss and accuracy, the most
    L-BFGS iterations of its folds, whether every fold converged, whether it was chosen)."""
    search = {"rule": SELECTION_RULE, "C": round(head.C_, 8), "C_at_grid_edge": head.C_at_grid_edge_,
              "tol": head.tol, "max_iter": head.max_iter, "refit_n_iter": head.n_iter_,
              "refit_converged": head.converged_}
    cs = head.cs
    if len(cs) > 1:
        loss, acc = head.cv_log_loss_, head.cv_accuracy_
        search["folds"] = int(loss.shape[0])
        search["n_C_not_converged"] = int(np.count_nonzero(~head.C_converged_))
        usable = np.flatnonzero(head.C_converged_)
        search["C_lowest_mean_log_loss"] = float(f"{cs[usable[int(np.argmin(loss.mean(axis=0)[usable]))]]:.6g}")
        search["one_se"] = round(head.cv_log_loss_se_, 6)
        # One row per C: the search plot (mean with sd over folds as error bars), not metrics.
        search["path"] = [{"log10_C": round(float(np.log10(c)), 4), "C": float(f"{c:.6g}"),
                           "cv_log_loss_mean": round(float(loss[:, i].mean()), 6),
                           "cv_log_loss_sd": round(float(loss[:, i].std(ddof=1)), 6),
                           "cv_accuracy_mean": round(float(acc[:, i].mean()), 6),
                           "cv_accuracy_sd": round(float(acc[:, i].std(ddof=1)), 6),
                           "n_iter": int(head.cv_n_iter_[:, i].max()), "converged": bool(head.C_converged_[i]),
                           "chosen": bool(c == head.C_)}
                          for i, c in enumerate(cs)]
    return search


def recorded_grid_edge(artefacts: Artefacts) -> str:
    """``C_at_grid_edge`` as train_logreg recorded it in ``logreg_search.json`` (one of ``GRID_EDGES``)."""
    path = artefacts.logreg_search
    try:
        edge = json.loads(path.read_text())["C_at_grid_edge"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise PetprobeError(f"{path} is missing or has no C_at_grid_edge ({one_line(err)}); "
                            "rerun train_logreg") from None
    if edge not in GRID_EDGES:
        raise PetprobeError(f"{path}: C_at_grid_edge is {json.dumps(edge)[:40]}, not one of {', '.join(GRID_EDGES)}; "
                            "rerun train_logreg")
    return edge
