"""Cheap heads on frozen embeddings, with scikit-learn manners and pickle-free files.

``LogRegHead``: standardise, then multinomial logistic regression (lbfgs), with C picked from a
log-spaced grid by validation accuracy and the winner refit on train+val. Saved as .npz and read
back with ``allow_pickle=False``.

``TorchHead``: standardise, then a linear layer or one hidden layer with dropout, trained with
AdamW, a cosine schedule and early stopping on the validation loss. Saved as a state_dict (.pt,
read back with ``weights_only=True``) plus a JSON file of its config and class names.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from stages.errors import PetprobeError, one_line
from stages.outputs import atomic_path, save_npz, write_json
from stages.training import fit_classifier, seeded

__all__ = ["LogRegHead", "TorchHead", "HeadNet", "HEAD_FILES", "c_grid", "load_head", "load_state_dict"]


def c_grid(c_min: float, c_max: float, c_steps: int) -> np.ndarray:
    return np.logspace(np.log10(c_min), np.log10(c_max), c_steps)


class LogRegHead:
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
        scores = scores - scores.max(axis=1, keepdims=True)
        p = np.exp(scores)
        return p / p.sum(axis=1, keepdims=True)

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
        head.scaler_ = StandardScaler()
        head.scaler_.mean_, head.scaler_.scale_ = mean, arrays["scaler_scale"]
        return head


# What LogRegHead.save writes: name -> (ndim, allowed dtype kinds). Checked on load, so a file with
# a swapped or foreign member fails with a clear line instead of somewhere inside numpy.
_LOGREG_ARRAYS = {"coef": (2, "f"), "intercept": (1, "f"), "classes": (1, "U"), "scaler_mean": (1, "f"),
                  "scaler_scale": (1, "f"), "C": (0, "f"), "cs": (1, "f"), "max_iter": (0, "iu")}


def load_state_dict(path: str | Path, data: bytes | None = None) -> dict:
    """A torch state_dict saved with ``torch.save``, loaded with ``weights_only=True``.

    weights_only refuses any pickled object other than tensors and plain containers, so a
    tampered file raises instead of running code; the result must be a mapping of names to tensors.
    ``data``, when given, is the file's content already read (``path`` then only names it).
    """
    import pickle

    source = io.BytesIO(data) if data is not None else path
    try:
        is_archive = zipfile.is_zipfile(source)
        if data is not None:
            source.seek(0)
    except OSError as err:
        raise PetprobeError(f"{path} is not a readable state_dict file ({one_line(err)}); retrain to write it again") from None
    if not is_archive:
        # torch.save writes a zip archive; anything else would be a bare (legacy) pickle stream.
        raise PetprobeError(f"{path} is not a state_dict archive written by torch.save; refused without "
                            "unpickling it (retrain to write it again)")
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message suggests weights_only=False, which is exactly what must not happen.
        raise PetprobeError(f"{path} holds pickled objects other than tensors and was refused "
                            "(a tampered or foreign file); retrain to write it again") from None
    except (OSError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as err:
        reason = one_line(err).split(". ")[0][:160]
        raise PetprobeError(f"{path} is not a readable state_dict file ({reason}); retrain to write it again") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise PetprobeError(f"{path} does not hold a state_dict (a mapping of names to tensors)")
    return state


class HeadNet(torch.nn.Module):
    """Embeddings ``(N, D)`` -> logits ``(N, C)``: standardise, then a linear or one-hidden-layer net.

    The mean and scale of the training embeddings are buffers, so the module works on raw
    backbone embeddings and its state_dict is the whole model.
    """

    def __init__(self, in_features: int, n_classes: int, *, hidden: int = 0, dropout: float = 0.0):
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("scale", torch.ones(in_features))
        if hidden:
            layers = [torch.nn.Dropout(dropout), torch.nn.Linear(in_features, hidden), torch.nn.ReLU(),
                      torch.nn.Dropout(dropout), torch.nn.Linear(hidden, n_classes)]
        else:
            layers = [torch.nn.Dropout(dropout), torch.nn.Linear(in_features, n_classes)]
        self.layers = torch.nn.Sequential(*layers)

    def forward(self, x):
        return self.layers((x - self.mean) / self.scale)


class TorchHead(ClassifierMixin, BaseEstimator):
    """A small torch classifier on embeddings, trained with early stopping on a validation set.

    Parameters
    ----------
    hidden : int
        Width of the hidden layer; 0 = a linear head (standardise, dropout, linear).
    dropout : float
        Dropout probability on the standardised input (and on the hidden layer).
    lr, weight_decay : float
        AdamW learning rate (decayed by a cosine schedule over ``max_epochs``) and weight decay.
    batch_size : int
        Mini-batch size; batches are shuffled from a ``torch.Generator`` seeded by ``random_state``.
    max_epochs, patience : int
        Epoch budget; stop after ``patience`` epochs without a lower validation loss and keep the
        best epoch's weights.
    refit : bool
        After early stopping, train again from the same initialisation on train + validation
        data for the best epoch count (as ``LogRegHead`` refits with the chosen C).
    random_state : int or None
        Seeds initialisation, dropout and shuffling. The same seed gives identical weights on
        the same machine (training runs on one CPU thread, whatever the thread setting).

    Attributes
    ----------
    classes_ : ndarray of str
        Sorted class labels; columns of ``predict_proba`` follow this order.
    module_ : HeadNet
        The trained network (eval mode).
    history_ : list of dict
        One record per epoch of the early-stopping run: epoch, lr, train_loss, train_accuracy,
        val_loss, val_accuracy.
    best_epoch_ : int
        The epoch with the lowest validation loss (whose weights were kept, or the refit's length).
    """

    FORMAT = "petprobe.TorchHead"
    VERSION = 1

    def __init__(self, hidden: int = 0, dropout: float = 0.2, lr: float = 1e-3, weight_decay: float = 1e-2,
                 batch_size: int = 64, max_epochs: int = 200, patience: int = 20, refit: bool = True,
                 random_state=None):
        self.hidden = hidden
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.refit = refit
        self.random_state = random_state

    def fit(self, X, y, X_val=None, y_val=None, *, desc: str | None = None) -> "TorchHead":
        """Train on (X, y), early-stopping on (X_val, y_val) when given; returns ``self``.

        Validation rows whose label does not occur in ``y`` are ignored. ``desc`` labels a
        progress bar (none when None).
        """
        X, y = np.asarray(X, np.float32), np.asarray(y)
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError(f"X must be (n_samples, n_features) matching y; got {X.shape} and {y.shape}")
        classes = np.unique(y)
        if len(classes) < 2:
            raise ValueError("TorchHead needs at least two classes in y")
        has_val = X_val is not None and len(X_val) > 0
        if has_val:
            X_val, y_val = np.asarray(X_val, np.float32), np.asarray(y_val)
            known = np.isin(y_val, classes)
            X_val, y_val = X_val[known], y_val[known]
        seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        net, history = self._train(X, y, X_val if has_val else None, y_val if has_val else None, classes, seed,
                                   stop_epoch=None, desc=desc)
        with_val = [r for r in history if "val_loss" in r]
        best_epoch = min(with_val, key=lambda r: r["val_loss"])["epoch"] if with_val else len(history)
        if self.refit and has_val:
            net, _ = self._train(np.concatenate([X, X_val]), np.concatenate([y, y_val]), None, None, classes, seed,
                                 stop_epoch=best_epoch, desc=desc and f"{desc} (refit)")
        self.classes_ = classes
        self.n_features_in_ = X.shape[1]
        self.module_ = net.eval()
        self.history_ = history
        self.best_epoch_ = best_epoch
        return self

    def _train(self, X, y, X_val, y_val, classes, seed: int, *, stop_epoch, desc):
        mean = X.mean(axis=0, dtype=np.float64)
        scale = X.std(axis=0, dtype=np.float64)
        scale[scale == 0] = 1.0  # a constant feature carries nothing; leave it unscaled
        val = (None, None) if X_val is None else (torch.from_numpy(X_val),
                                                  torch.from_numpy(np.searchsorted(classes, y_val)))
        # One thread: the same seed then gives the same weights whatever the machine's thread
        # setting (a thread count changes how float sums are split). The head is small enough.
        with seeded(seed, num_threads=1):
            net = HeadNet(X.shape[1], len(classes), hidden=self.hidden, dropout=self.dropout)
            net.mean.copy_(torch.from_numpy(mean))
            net.scale.copy_(torch.from_numpy(scale))
            history = fit_classifier(
                net, torch.from_numpy(X), torch.from_numpy(np.searchsorted(classes, y)), *val,
                lr=self.lr, weight_decay=self.weight_decay, batch_size=self.batch_size,
                max_epochs=self.max_epochs, patience=self.patience, stop_epoch=stop_epoch,
                generator=torch.Generator().manual_seed(seed), desc=desc,
            )
        return net, history

    def decision_function(self, X) -> np.ndarray:
        """Logits, columns in ``classes_`` order."""
        check_is_fitted(self, "module_")
        X = np.asarray(X, np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has shape {X.shape}; this head expects (n, {self.n_features_in_})")
        with torch.no_grad():
            return self.module_(torch.from_numpy(X)).double().numpy()

    def predict_proba(self, X) -> np.ndarray:
        logits = self.decision_function(X)
        logits = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]

    def to_module(self) -> torch.nn.Module:
        """A frozen copy of the network: embeddings -> logits whose softmax is ``predict_proba``."""
        check_is_fitted(self, "module_")
        return copy.deepcopy(self.module_).eval().requires_grad_(False)

    def save(self, path: str | Path) -> None:
        """Write the state_dict to ``path`` (.pt) and config + class names to the .json beside it."""
        check_is_fitted(self, "module_")
        path = Path(path)
        state = {k: v.detach().cpu().contiguous() for k, v in self.module_.state_dict().items()}
        # Saved through a buffer: torch.save names the archive's root folder after the file it
        # writes to, which here is a random temporary name, so reruns would differ byte-wise.
        buffer = io.BytesIO()
        torch.save(state, buffer)
        with atomic_path(path) as tmp:
            tmp.write_bytes(buffer.getvalue())
        write_json(path.with_suffix(".json"), {
            "format": self.FORMAT, "version": self.VERSION, "params": self.get_params(),
            "classes": [str(c) for c in self.classes_], "n_features_in": int(self.n_features_in_),
            "best_epoch": int(self.best_epoch_), "epochs_run": len(getattr(self, "history_", [])),
            # Ties the pair together: a .pt from another run is refused at load time.
            "weights_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        })

    @classmethod
    def load(cls, path: str | Path) -> "TorchHead":
        """Read a head written by ``save``; any missing, tampered or mismatched file is a PetprobeError."""
        path = Path(path)
        config_path = path.with_suffix(".json")
        rerun = "rerun train_head (dvc repro)"
        try:
            config = json.loads(config_path.read_text())
            data = path.read_bytes()
        except (OSError, ValueError) as err:
            raise PetprobeError(f"cannot read the torch head {path} / {config_path.name} ({err}); {rerun}") from None
        try:
            if config["format"] != cls.FORMAT or config["version"] != cls.VERSION:
                raise ValueError(f"format {config['format']!r} version {config['version']!r}")
            classes = np.asarray(config["classes"], dtype=str)
            n_features = int(config["n_features_in"])
            head = cls(**config["params"])
            expected_sha = config["weights_sha256"]
        except (KeyError, TypeError, ValueError) as err:
            raise PetprobeError(f"{config_path} is not a valid torch-head config ({err}); {rerun}") from None
        if hashlib.sha256(data).hexdigest() != expected_sha:
            raise PetprobeError(f"{path} does not match {config_path.name} (sha256 differs); {rerun}")
        state = load_state_dict(path, data)  # weights_only: never arbitrary pickled objects
        try:
            net = HeadNet(n_features, len(classes), hidden=head.hidden, dropout=head.dropout)
            net.load_state_dict(state, strict=True)
        except (RuntimeError, ValueError, TypeError) as err:  # missing/unexpected keys, wrong shapes
            raise PetprobeError(f"{path} is not a state_dict matching {config_path.name} "
                                f"({one_line(err)[:200]}); {rerun}") from None
        head.classes_, head.n_features_in_, head.module_ = classes, n_features, net.eval()
        head.best_epoch_ = int(config.get("best_epoch", 0))
        return head


# The file each head is saved to under data/models/<ds>/, and how it is read back.
HEAD_FILES = {"logreg": ("logreg.npz", LogRegHead), "head": ("head.pt", TorchHead)}


def load_head(models_dir: str | Path, name: str):
    """Load head ``name`` (``logreg`` or ``head``) of one dataset's models folder."""
    if name not in HEAD_FILES:
        raise PetprobeError(f"unknown head '{name}' (valid: {', '.join(sorted(HEAD_FILES))})")
    filename, cls = HEAD_FILES[name]
    path = Path(models_dir) / filename
    if not path.is_file():
        raise PetprobeError(f"{path} is missing; train the model first (dvc repro)")
    return cls.load(path)
