"""Standardised multinomial logistic regression on frozen embeddings, saved without pickle.

``LogRegHead`` follows scikit-learn's estimator conventions (``fit``/``predict_proba``,
``classes_``, ``n_features_in_``): standardise, then multinomial logistic regression (lbfgs), with
C picked from a log-spaced grid by validation accuracy and the winner refit on train+val. Saved as
.npz and read back with ``allow_pickle=False``.
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
from sklearn.preprocessing import StandardScaler

from petprobe.errors import PetprobeError, one_line
from petprobe.outputs import save_npz

__all__ = ["LogRegHead", "c_grid"]


def c_grid(c_min: float, c_max: float, c_steps: int) -> np.ndarray:
    return np.logspace(np.log10(c_min), np.log10(c_max), c_steps)


class LogRegHead(ClassifierMixin, BaseEstimator):
    """Standardised multinomial logistic regression with C chosen on a validation set.

    Parameters
    ----------
    cs : sequence of float
        Candidate inverse regularisation strengths.
    max_iter : int
        lbfgs iteration limit per fit.
    """

    def __init__(self, cs=(0.01, 0.1, 1.0), max_iter: int = 3000):
        self.cs = cs
        self.max_iter = max_iter

    def _fit_one(self, X, y, C):
        model = LogisticRegression(C=C, solver="lbfgs", max_iter=self.max_iter)
        with warnings.catch_warnings():
            # Reported in val_scores_ as a poorer score, not as noise on stderr.
            warnings.simplefilter("ignore", ConvergenceWarning)
            return model.fit(X, y)

    def fit(self, X, y, X_val=None, y_val=None) -> "LogRegHead":
        """Pick C on (X_val, y_val) when given (else the first C), then refit on all data."""
        X, y = np.asarray(X, np.float64), np.asarray(y)
        cs = [float(c) for c in self.cs]
        self.val_scores_, self.val_log_loss_ = {}, {}
        if X_val is not None and len(X_val) and len(cs) > 1:
            X_val, y_val = np.asarray(X_val, np.float64), np.asarray(y_val)
            scaler = StandardScaler().fit(X)
            for C in cs:
                model = self._fit_one(scaler.transform(X), y, C)
                proba = model.predict_proba(scaler.transform(X_val))
                self.val_scores_[C] = float((model.classes_[proba.argmax(axis=1)] == y_val).mean())
                seen = np.isin(y_val, model.classes_)
                picked = proba[seen.nonzero()[0], np.searchsorted(model.classes_, y_val[seen])]
                self.val_log_loss_[C] = float(-np.log(np.clip(picked, 1e-15, 1.0)).mean())
            # On a small val set, accuracies one or two images apart are noise: every C within one
            # binomial standard error of the best is as good as the best (the one-SE rule). Of that
            # plateau the edges are the worst picks (the smallest C gives flat probabilities, the
            # largest overfits), so take its middle. Exact argmax flipped between C=0.1 and C=10 on
            # the pets sample with bf16 vs fp32 embeddings; this choice does not.
            best = max(self.val_scores_.values())
            self.val_tolerance_ = float(np.sqrt(best * (1.0 - best) / len(y_val)))
            plateau = sorted(c for c in cs if self.val_scores_[c] >= best - self.val_tolerance_ - 1e-12)
            self.C_ = plateau[(len(plateau) - 1) // 2]
            X, y = np.concatenate([X, X_val]), np.concatenate([y, y_val])
        else:
            self.C_ = cs[0]
        self.scaler_ = StandardScaler().fit(X)
        model = self._fit_one(self.scaler_.transform(X), y, self.C_)
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
            with np.load(path, allow_pickle=False) as f:
                if not isinstance(f, np.lib.npyio.NpzFile):
                    raise ValueError("a single .npy array, not an .npz archive")
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

