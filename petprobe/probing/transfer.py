"""The transfer check's second model: another backbone with a logistic regression trained here.

An adversarial image made for one model "transfers" when a model built on another backbone is
fooled too. ``transfer_classifier`` trains that second model as train_logreg trains the main one,
on a bounded number of images per class, so the render stage stays short on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from petprobe.backbones import Backbone, get_backbone, list_backbones
from petprobe.device import Precision
from petprobe.embedding.embed import embed_images
from petprobe.errors import PetprobeError
from petprobe.heads.logreg import LogRegHead
from petprobe.probing.classifier import PixelClassifier, pixel_classifier

__all__ = ["pick_transfer_backbone", "fit_logreg_head", "transfer_classifier", "TransferModel", "transfer_judge"]


def pick_transfer_backbone(requested: str, main: str) -> str | None:
    """``auto``: the first other registered backbone whose weights are here; ``none``: no transfer check."""
    if requested == "none":
        return None
    if requested == "auto":
        # Only backbones usable offline: a torchvision entry without its cached file would stop the stage.
        others = [name for name in list_backbones() if name != main and get_backbone(name).weights.available()]
        return others[0] if others else None
    if requested == main:
        raise PetprobeError(f"render.transfer_backbone is the main backbone '{main}'; pick another or auto")
    return requested


def fit_logreg_head(backbone: Backbone, net: nn.Module, splits: dict[str, tuple[list[str], np.ndarray]], *,
                    cs, max_iter: int, tol: float, cv_folds: int = 5, seed: int = 0, batch_size: int,
                    device: torch.device) -> tuple[nn.Module, list[str]]:
    """Embed ``splits`` ({'train'|'val': (paths, labels)}) with ``net`` and fit a ``LogRegHead`` on them."""
    X = {split: np.concatenate(list(embed_images(net, backbone.preprocessing, list(paths), batch_size=batch_size,
                                                 num_workers=0, device=device, precision=Precision("fp32", None),
                                                 desc=f"transfer check: embed {split} with {backbone.name}")))
         for split, (paths, _) in splits.items()}
    y = {split: labels for split, (_, labels) in splits.items()}
    head = LogRegHead(cs=tuple(cs), max_iter=max_iter, tol=tol, cv_folds=cv_folds,
                      random_state=seed).fit(X["train"], y["train"], X.get("val"), y.get("val"))
    return head.to_module(), [str(c) for c in head.classes_]


def transfer_classifier(name: str, manifest, *, per_class: int, cs, max_iter: int, tol: float, cv_folds: int = 5,
                        seed: int = 0, batch_size: int, device: torch.device) -> tuple[PixelClassifier, list[str]]:
    """A second pixel classifier: backbone ``name`` + a logistic regression trained here on at most
    ``per_class`` train and val images per class (C by k-fold CV over both), in manifest order."""
    backbone = get_backbone(name)
    net = backbone.build()
    splits = {}
    for split in ("train", "val"):
        rows = manifest[manifest.split == split].groupby("label", sort=False).head(per_class)
        splits[split] = (rows.path.tolist(), rows.label.to_numpy())
    head, classes = fit_logreg_head(backbone, net, splits, cs=cs, max_iter=max_iter, tol=tol, cv_folds=cv_folds,
                                    seed=seed, batch_size=batch_size, device=device)
    return pixel_classifier(backbone, head, net=net).to(device), classes


@dataclass(frozen=True)
class TransferModel:
    """The transfer check's model: its backbone's ``name``, the pixel classifier, its class names."""

    name: str
    model: PixelClassifier
    classes: list[str]


def transfer_judge(requested: str, main: str, manifest, **fit) -> TransferModel | None:
    """The transfer check's model (``pick_transfer_backbone``, then ``transfer_classifier`` with the
    ``fit`` arguments), or None when there is none."""
    if (name := pick_transfer_backbone(requested, main)) is None:
        return None
    return TransferModel(name, *transfer_classifier(name, manifest, **fit))
