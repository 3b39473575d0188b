"""Weighted k-nearest-neighbour probe on frozen embeddings (DINO's kNN evaluation), saved without pickle.

The protocol of Wu et al. 2018 as DINO (Caron et al. 2021, ``eval_knn.py``) runs it: embeddings
L2-normalised, the ``k`` training images of highest cosine similarity to a query vote for their
class with weight ``exp(similarity / temperature)`` (DINO: k = 20, T = 0.07). The class
probabilities are the votes over their sum. Nothing is trained: the probe shows how clustered the
features are, where the logistic probe shows how linearly separable they are. ``KNNHead`` follows
scikit-learn's estimator conventions (``fit``/``predict_proba``, ``classes_``, ``n_features_in_``)
and is saved as .npz (the normalised training embeddings, their labels, k and T), read back with
``allow_pickle=False``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from petprobe.artefacts import read_checked_npz
from petprobe.errors import PetprobeError, one_line
from petprobe.outputs import save_npz

__all__ = ["KNNHead", "DEFAULT_K", "DEFAULT_TEMPERATURE"]

DEFAULT_K = 20
DEFAULT_TEMPERATURE = 0.07
# Queries scored at once: a (rows x n_train) similarity block stays in the tens of MB at full size.
_BLOCK = 1024


def _normalised(X) -> np.ndarray:
    X = np.asarray(X, np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, np.finfo(np.float32).tiny)  # an all-zero row stays zero (similarity 0 to all)


class KNNHead(ClassifierMixin, BaseEstimator):
    """Cosine k-nearest-neighbour classifier with temperature-weighted votes.

    Parameters
    ----------
    k : int
        Neighbours that vote (capped by the number of training images).
    temperature : float
        Each neighbour's vote is ``exp(cosine similarity / temperature)``: small values give the
        nearest neighbours almost all the weight, large ones approach an unweighted majority.
    """

    def __init__(self, k: int = DEFAULT_K, temperature: float = DEFAULT_TEMPERATURE):
        self.k = k
        self.temperature = temperature

    def fit(self, X, y) -> KNNHead:
        """Keep the L2-normalised embeddings ``X`` and their labels ``y`` as the voters."""
        X, y = np.asarray(X), np.asarray(y)
        if X.ndim != 2 or len(X) != len(y) or not len(y):
            raise ValueError(f"X has shape {X.shape} and y {y.shape}: need (n, d) and (n,), n >= 1")
        self.classes_, self.train_labels_ = np.unique(y, return_inverse=True)
        self.train_embeddings_ = _normalised(X)
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Class votes over their sum, ``(n, n_classes)`` in the order of ``classes_``."""
        check_is_fitted(self, "train_embeddings_")
        X = np.asarray(X, np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has shape {X.shape}; this head expects (n, {self.n_features_in_})")
        if not len(X):
            return np.zeros((0, len(self.classes_)))
        return np.concatenate([self._votes(_normalised(X[i:i + _BLOCK])) for i in range(0, len(X), _BLOCK)])

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def _votes(self, Q: np.ndarray) -> np.ndarray:
        k = min(self.k, len(self.train_labels_))
        sims = Q @ self.train_embeddings_.T
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(sims, nearest, axis=1).astype(np.float64)
        # exp((s - max s) / T): the common factor exp(max s / T) cancels in the normalisation and
        # the exponent stays <= 0, so no overflow at small T.
        weights = np.exp((top - top.max(axis=1, keepdims=True)) / self.temperature)
        votes = np.zeros((len(Q), len(self.classes_)))
        np.add.at(votes, (np.arange(len(Q))[:, None], self.train_labels_[nearest]), weights)
        return votes / votes.sum(axis=1, keepdims=True)

    def to_module(self) -> torch.nn.Module:
        """A torch ``nn.Module`` mapping embeddings to logits whose softmax is ``predict_proba``.

        The logits are the log of the vote shares (a class without a vote gets a large negative
        one), differentiable through the neighbours' similarities, so render and explain can use it.
        """
        check_is_fitted(self, "train_embeddings_")
        return _KNNModule(self.train_embeddings_, self.train_labels_, len(self.classes_), self.k,
                          self.temperature).eval().requires_grad_(False)

    def save(self, path: str | Path) -> None:
        check_is_fitted(self, "train_embeddings_")
        save_npz(path, train_embeddings=self.train_embeddings_, train_labels=self.train_labels_.astype(np.int64),
                 classes=np.asarray(self.classes_, dtype=str), k=np.int64(self.k),
                 temperature=np.float64(self.temperature))

    @classmethod
    def load(cls, path: str | Path) -> KNNHead:
        """Read a file written by ``save``. No pickle: a tampered file is an error, never code."""
        rerun = "rerun train_knn"
        try:
            arrays = read_checked_npz(path, _KNN_ARRAYS)
        except ValueError as err:
            raise PetprobeError(f"{path} is not a valid kNN-probe file ({one_line(err)}); {rerun}") from None
        bank, labels, classes = arrays["train_embeddings"], arrays["train_labels"], arrays["classes"]
        k, temperature = int(arrays["k"]), float(arrays["temperature"])
        if len(bank) != len(labels) or not len(labels) or len(classes) < 1:
            raise PetprobeError(f"{path} has inconsistent array shapes; {rerun}")
        if labels.min() < 0 or labels.max() >= len(classes):
            raise PetprobeError(f"{path} has labels outside its {len(classes)} classes; {rerun}")
        if not np.isfinite(bank).all() or not (k >= 1 and np.isfinite(temperature) and temperature > 0):
            raise PetprobeError(f"{path} holds NaN, infinite or out-of-range values; {rerun}")
        head = cls(k=k, temperature=temperature)
        head.train_embeddings_, head.train_labels_ = bank.astype(np.float32, copy=False), labels.astype(np.intp)
        head.classes_, head.n_features_in_ = classes, bank.shape[1]
        return head


# What KNNHead.save writes: name -> (ndim, allowed dtype kinds), checked on load.
_KNN_ARRAYS = {"train_embeddings": (2, "f"), "train_labels": (1, "iu"), "classes": (1, "U"), "k": (0, "iu"),
               "temperature": (0, "f")}


class _KNNModule(torch.nn.Module):
    def __init__(self, bank: np.ndarray, labels: np.ndarray, n_classes: int, k: int, temperature: float):
        super().__init__()
        self.register_buffer("bank", torch.as_tensor(bank, dtype=torch.float32))
        self.register_buffer("labels", torch.as_tensor(labels, dtype=torch.long))
        self.n_classes, self.k, self.temperature = n_classes, min(k, len(labels)), temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = torch.nn.functional.normalize(x.float(), dim=1)
        top, nearest = (q @ self.bank.T).topk(self.k, dim=1)
        weights = torch.exp((top - top.max(dim=1, keepdim=True).values.detach()) / self.temperature)
        votes = torch.zeros(len(x), self.n_classes, dtype=weights.dtype, device=x.device)
        votes = votes.scatter_add(1, self.labels[nearest], weights)
        return torch.log(votes / votes.sum(dim=1, keepdim=True) + 1e-12)
