"""A small torch classifier on frozen embeddings, with scikit-learn manners and a pickle-free file.

``TorchHead``: standardise, then a linear layer or one hidden layer with dropout, trained with
AdamW, a cosine schedule and early stopping on the validation loss (``heads.training``). Saved as
a state_dict (.pt, read back with ``weights_only=True``) plus a JSON file of its config, class
names and the state_dict's sha256.
"""

from __future__ import annotations

import copy
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import torch
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from petprobe.checksums import file_sha256, sha256_bytes
from petprobe.errors import PetprobeError, one_line
from petprobe.heads.calibration import TEMPERATURE_BOUNDS, fit_temperature
from petprobe.heads.training import fit_classifier, seeded
from petprobe.outputs import atomic_path, write_json

__all__ = ["TorchHead", "HeadNet", "load_state_dict"]


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
        AdamW learning rate (decayed by a cosine schedule over ``max_epochs``, or over the refit's
        length) and weight decay.
    batch_size : int
        Mini-batch size; batches are shuffled from a ``torch.Generator`` seeded by ``random_state``.
    max_epochs, patience : int
        Epoch budget; stop after ``patience`` epochs without a lower validation loss and keep the
        best epoch's weights.
    refit : bool
        After early stopping, train again from the same initialisation on train + validation
        data for the best epoch count, its cosine schedule spanning those epochs (as
        ``LogRegHead`` refits with the chosen C). The history's val numbers are then those of the
        early-stopping run, not of the saved model (whose training data include val).
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
    temperature_ : float
        Temperature scaling (Guo et al. 2017): the saved logits are divided by it, fitted on the
        validation set to minimise its log-loss with the early-stopping network, the one that never
        saw val (the refit trains on val, so its own val logits would be fitted to seen labels);
        the refit, trained the same way for as many epochs, inherits it. 1.0 without val.
        ``decision_function``, ``predict_proba`` and ``to_module`` are calibrated;
        ``uncalibrated_proba`` is the softmax of the raw logits.
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

    def fit(self, X, y, X_val=None, y_val=None, *, desc: str | None = None) -> TorchHead:
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
        self.temperature_ = 1.0
        if has_val:
            with torch.no_grad():
                logits = net.eval()(torch.from_numpy(X_val)).double().numpy()
            self.temperature_ = fit_temperature(logits, np.searchsorted(classes, y_val))
        if self.refit and has_val:
            net, _ = self._train(np.concatenate([X, X_val]), np.concatenate([y, y_val]), None, None, classes, seed,
                                 stop_epoch=best_epoch, desc=desc and f"{desc} (refit)")
        self.classes_ = classes
        self.n_features_in_ = X.shape[1]
        self.module_ = net.eval()
        self.history_ = history
        self.best_epoch_ = best_epoch
        self.refit_ = bool(self.refit and has_val)
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
            return self.module_(torch.from_numpy(X)).double().numpy() / self.temperature_

    def predict_proba(self, X) -> np.ndarray:
        return softmax(self.decision_function(X), axis=1)

    def uncalibrated_proba(self, X) -> np.ndarray:
        """Class probabilities before temperature scaling (the softmax of the network's own logits)."""
        return softmax(self.decision_function(X) * self.temperature_, axis=1)

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]

    def to_module(self) -> torch.nn.Module:
        """A frozen copy of the network: embeddings -> calibrated logits whose softmax is ``predict_proba``."""
        check_is_fitted(self, "module_")
        net = copy.deepcopy(self.module_)
        last = net.layers[-1]  # 1/T folded into the last Linear layer: the same structure, calibrated logits
        with torch.no_grad():
            last.weight /= self.temperature_
            last.bias /= self.temperature_
        return net.eval().requires_grad_(False)

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
            "temperature": float(self.temperature_),
            # Ties the pair together: a .pt from another run is refused at load time.
            "weights_sha256": file_sha256(path),
        })

    @classmethod
    def load(cls, path: str | Path) -> TorchHead:
        """Read a head written by ``save``; any missing, tampered or mismatched file is a PetprobeError."""
        path = Path(path)
        config_path = path.with_suffix(".json")
        rerun = "rerun train_head (dvc repro)"
        try:
            if config_path.stat().st_size > _MAX_CONFIG_BYTES:
                raise ValueError(f"{config_path.stat().st_size:,} bytes, over the {_MAX_CONFIG_BYTES:,}-byte limit")
            config = json.loads(config_path.read_text())
            data = path.read_bytes()
        except (OSError, ValueError) as err:
            raise PetprobeError(f"cannot read the torch head {path} / {config_path.name} ({one_line(err)}); "
                                f"{rerun}") from None
        try:
            if config["format"] != cls.FORMAT or config["version"] != cls.VERSION:
                raise ValueError(f"format {config['format']!r} version {config['version']!r}")
            classes, n_features = _checked_classes(config["classes"]), _checked_int(config["n_features_in"], 1, 1 << 20)
            head = cls(**config["params"])
            # The bounds of params.yaml's head section: a NaN dropout would fail at predict time.
            _checked_int(head.hidden, 0, 65536)
            if not isinstance(head.dropout, (int, float)) or not 0.0 <= head.dropout < 1.0:
                raise ValueError(f"dropout {head.dropout!r} is not in [0, 1)")
            expected_sha = config["weights_sha256"]
            temperature = config.get("temperature", 1.0)  # heads saved before calibration: none
            if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
                    TEMPERATURE_BOUNDS[0] <= temperature <= TEMPERATURE_BOUNDS[1]):
                raise ValueError(f"temperature {temperature!r} is not in {list(TEMPERATURE_BOUNDS)}")
        except (KeyError, TypeError, ValueError) as err:
            raise PetprobeError(f"{config_path} is not a valid torch-head config ({one_line(err, 200)}); {rerun}") from None
        if sha256_bytes(data) != expected_sha:
            raise PetprobeError(f"{path} does not match {config_path.name} (sha256 differs); {rerun}")
        state = load_state_dict(path, data)  # weights_only: never arbitrary pickled objects
        try:
            # Built on the meta device, which allocates nothing, then given the file's own tensors
            # (assign): a config claiming 10**9 features or 10**6 classes for a small state_dict
            # fails the shape check before any memory is taken (it cost up to 8.7 GB).
            with torch.device("meta"):
                net = HeadNet(n_features, len(classes), hidden=head.hidden, dropout=head.dropout)
            net.load_state_dict(state, strict=True, assign=True)
        except (RuntimeError, ValueError, TypeError) as err:  # missing/unexpected keys, wrong shapes
            raise PetprobeError(f"{path} is not a state_dict matching {config_path.name} "
                                f"({one_line(err, 200)}); {rerun}") from None
        head.classes_, head.n_features_in_, head.module_ = classes, n_features, net.eval()
        head.best_epoch_ = int(config.get("best_epoch", 0))
        head.temperature_ = float(temperature)
        return head



# head.json holds the config and the class names: kilobytes for any real dataset.
_MAX_CONFIG_BYTES = 16 * 2**20


def _checked_int(value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{value!r} is not an integer in [{low}, {high}]")
    return value


def _checked_classes(names) -> np.ndarray:
    """Class names as written by ``save``: distinct, non-empty strings of at most 255 characters (folder names)."""
    if (not isinstance(names, list) or len(names) < 2 or len(set(map(str, names))) != len(names)
            or not all(isinstance(c, str) and 0 < len(c) <= 255 for c in names)):
        raise ValueError("'classes' is not a list of at least 2 distinct names of 1-255 characters")
    return np.asarray(names, dtype=str)
