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
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from petprobe.artefacts import read_npy_header
from petprobe.errors import PetprobeError, one_line
from petprobe.outputs import save_npz

__all__ = ["LogRegHead", "c_grid", "c_path_scores", "cv_path_scores", "SELECTION_RULE"]

SELECTION_RULE = "stratified_kfold_cv_log_loss_one_se"


def c_grid(c_min: float, c_max: float, c_steps: int) -> np.ndarray:
    return np.logspace(np.log10(c_min), np.log10(c_max), c_steps)


def _logistic(C: float, max_iter: int, warm_start: bool = False) -> LogisticRegression:
    return LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter, warm_start=warm_start)


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


def c_path_scores(X, y, X_eval, y_eval, cs, *, max_iter: int = 3000, classes=None) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and log-loss on (X_eval, y_eval) of a probe trained on (X, y) at each C.

    Standardised on X. The fits run along ``cs`` in increasing order, each warm-started from the
    previous solution (the regularisation path): about 10x fewer L-BFGS iterations than cold fits.
    ``classes`` (default: those of y and y_eval) fixes the log-loss columns, so an eval class the
    training part lacks costs -log(1e-15) instead of an error.
    """
    classes = np.unique(np.concatenate([y, y_eval])) if classes is None else np.asarray(classes)
    # Our own float64 copies, standardised in place (the caller's arrays are not touched).
    return _c_path_scores(np.array(X, np.float64), y, np.array(X_eval, np.float64), y_eval, cs, max_iter, classes)


def _c_path_scores(Z, y, Z_eval, y_eval, cs, max_iter, classes):
    """As c_path_scores, on float64 arrays this function owns: they are standardised in place, so a
    fold costs one float64 copy of its rows, not two."""
    cs = np.asarray(cs, np.float64)
    # One BLAS thread: these matrices are small (hundreds x ~1000), so threads cost more in start-up
    # and contention than they save; 20x slower measured with a loaded 2-core machine.
    with threadpool_limits(limits=1, user_api="blas"):
        standardise_in_place(Z, Z_eval)
        eval_index = np.searchsorted(classes, y_eval)
        order = np.argsort(cs)
        accuracy, loss = np.empty(len(cs)), np.empty(len(cs))
        model = _logistic(float(cs[order[0]]), max_iter, warm_start=True)
        with warnings.catch_warnings():
            # An unconverged fit shows up as a poorer score, not as noise on stderr.
            warnings.simplefilter("ignore", ConvergenceWarning)
            for i in order:
                model.set_params(C=float(cs[i])).fit(Z, y)
                proba = np.zeros((len(Z_eval), len(classes)))
                proba[:, np.searchsorted(classes, model.classes_)] = model.predict_proba(Z_eval)
                accuracy[i] = float((proba.argmax(axis=1) == eval_index).mean())
                loss[i] = float(-np.log(np.clip(proba[np.arange(len(Z_eval)), eval_index], 1e-15, 1.0)).mean())
    return accuracy, loss


def cv_path_scores(X, y, cs, *, folds: int, max_iter: int = 3000, random_state=0) -> tuple[np.ndarray, np.ndarray]:
    """Per-fold accuracy and log-loss, each (n_folds, len(cs)), of stratified k-fold CV over (X, y).

    Folds are capped by the smallest class (at least 2), as StratifiedKFold needs.
    """
    y = np.asarray(y)
    smallest = int(np.unique(y, return_counts=True)[1].min())
    splitter = StratifiedKFold(n_splits=max(2, min(folds, smallest)), shuffle=True, random_state=random_state)
    classes = np.unique(y)
    # Each fold's rows are copied once, straight to float64 (X itself may stay float32).
    scores = [_c_path_scores(_rows_float64(X, tr), y[tr], _rows_float64(X, ev), y[ev], cs, max_iter, classes)
              for tr, ev in splitter.split(X, y)]
    return np.array([a for a, _ in scores]), np.array([l for _, l in scores])


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
    cv_folds : int
        Folds of the C search (capped by the smallest class).
    random_state : int
        Seed of the fold assignment.

    After ``fit`` with several C: ``cv_accuracy_`` and ``cv_log_loss_`` (n_folds, n_C), ``C_`` (the
    smallest C whose mean fold log-loss is within ``cv_log_loss_se_``, one standard error over
    folds, of the lowest) and ``C_at_grid_edge_`` ("low",
    "high" or "", when the pick is the smallest or largest C of the grid, a sign the grid is too narrow).
    """

    def __init__(self, cs=(0.01, 0.1, 1.0), max_iter: int = 3000, cv_folds: int = 5, random_state: int = 0):
        self.cs = cs
        self.max_iter = max_iter
        self.cv_folds = cv_folds
        self.random_state = random_state

    def fit(self, X, y, X_val=None, y_val=None) -> "LogRegHead":
        """Choose C by k-fold CV over X (plus X_val when given: the folds cover train+val), refit on all of it."""
        # Embeddings stay in their float32 (half the memory of float64, the largest array of the
        # stage at full size); every fit gets its own float64 copy, so the numbers are those of an
        # all-float64 run.
        X, y = _features(X), np.asarray(y)
        if X_val is not None and len(X_val):
            X, y = np.concatenate([X, _features(X_val)]), np.concatenate([y, np.asarray(y_val)])
        cs = np.array([float(c) for c in self.cs])
        self.C_at_grid_edge_ = ""
        if len(cs) > 1:
            self.cv_accuracy_, self.cv_log_loss_ = cv_path_scores(X, y, cs, folds=self.cv_folds, max_iter=self.max_iter,
                                                                  random_state=self.random_state)
            # Log-loss, not accuracy: on a few dozen images per fold accuracy moves in steps of one
            # image and ties across decades of C; log-loss is smooth in C and rewards calibration.
            # But above some C it is flat (the data are nearly separable), and its argmin wanders
            # along that plateau by 1e-4 differences (C = 562 on the pets sample: 4 test images
            # worse). So the one-SE rule (Hastie et al.): the most regularised C whose mean fold
            # log-loss is within one standard error (over folds) of the lowest.
            mean_loss = self.cv_log_loss_.mean(axis=0)
            best = int(np.argmin(mean_loss))
            self.cv_log_loss_se_ = float(self.cv_log_loss_[:, best].std(ddof=1) / np.sqrt(len(self.cv_log_loss_)))
            within = np.flatnonzero(mean_loss <= mean_loss[best] + self.cv_log_loss_se_)
            self.C_ = float(cs[within[np.argmin(cs[within])]])
            if len(cs) > 2 and self.C_ in (cs.min(), cs.max()):
                self.C_at_grid_edge_ = "low" if self.C_ == cs.min() else "high"
        else:
            self.C_ = float(cs[0])
        Z = np.array(X, np.float64)  # converted straight from float32: no intermediate copy
        self.scaler_ = standardise_in_place(Z)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = _logistic(self.C_, self.max_iter).fit(Z, y)
        self.classes_ = model.classes_
        self.n_features_in_ = X.shape[1]
        self.coef_, self.intercept_ = model.coef_, model.intercept_
        self.n_iter_ = int(np.max(model.n_iter_))
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
                 cs=np.asarray(self.cs, np.float64), max_iter=np.int64(self.max_iter))

    @classmethod
    def load(cls, path: str | Path) -> "LogRegHead":
        """Read a file written by ``save``. No pickle: a tampered file is an error, never code."""
        rerun = "rerun train_logreg"
        try:
            if not zipfile.is_zipfile(path):  # np.load would read (and allocate) a bare .npy at once
                raise ValueError("not an .npz archive")
            with np.load(path, allow_pickle=False) as f:
                for key in _LOGREG_ARRAYS:  # each header first: numpy allocates the shape it claims
                    info = f.zip.getinfo(f"{key}.npy")
                    if info.compress_type != zipfile.ZIP_STORED:  # np.savez stores; sizes then are real
                        raise ValueError(f"member {key}.npy is compressed, as save never writes it")
                    with f.zip.open(info) as member:
                        if member.read(6) != b"\x93NUMPY":
                            continue  # numpy hands back the raw bytes, refused by the type check below
                    with f.zip.open(info) as member:
                        read_npy_header(member, info.file_size)
                arrays = {key: f[key] for key in _LOGREG_ARRAYS}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            raise PetprobeError(f"{path} is not a valid logistic-regression file ({one_line(err)}); {rerun}") from None
        bad = [k for k, a in arrays.items() if not isinstance(a, np.ndarray)
               or a.dtype.kind not in _LOGREG_ARRAYS[k][1] or a.ndim != _LOGREG_ARRAYS[k][0]]
        if bad:  # e.g. a member that is not .npy data: numpy hands back its raw bytes
            raise PetprobeError(f"{path}: array '{bad[0]}' has the wrong type or shape; {rerun}")
        coef, classes, mean = arrays["coef"], arrays["classes"], arrays["scaler_mean"]
        if (coef.shape[1] != mean.shape[0] or coef.shape[0] not in (1, len(classes))
                or arrays["intercept"].shape != (coef.shape[0],) or arrays["scaler_scale"].shape != mean.shape):
            raise PetprobeError(f"{path} has inconsistent array shapes; {rerun}")
        numbers = [arrays[k] for k in ("coef", "intercept", "scaler_mean", "scaler_scale", "C")]
        if not all(np.isfinite(a).all() for a in numbers):
            raise PetprobeError(f"{path} holds NaN or infinite values; {rerun}")
        head = cls(cs=tuple(arrays["cs"].tolist()), max_iter=int(arrays["max_iter"]))
        head.coef_, head.intercept_, head.classes_, head.C_ = coef, arrays["intercept"], classes, float(arrays["C"])
        head.n_features_in_ = coef.shape[1]
        head.scaler_ = StandardScaler()
        head.scaler_.mean_, head.scaler_.scale_ = mean, arrays["scaler_scale"]
        return head


# What LogRegHead.save writes: name -> (ndim, allowed dtype kinds). Checked on load, so a file with
# a swapped or foreign member fails with a clear line instead of somewhere inside numpy.
_LOGREG_ARRAYS = {"coef": (2, "f"), "intercept": (1, "f"), "classes": (1, "U"), "scaler_mean": (1, "f"),
                  "scaler_scale": (1, "f"), "C": (0, "f"), "cs": (1, "f"), "max_iter": (0, "iu")}

