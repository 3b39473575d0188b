"""Whole classifiers in pixel space: [0,1] images in, logits out, for rendering and attacks.

``PixelClassifier`` is one ``nn.Module``: the registry's Normalize, the frozen backbone, a head. It
takes images ``(N, 3, H, W)`` in [0,1] and returns ``(N, C)`` logits, so eps and step sizes stay in
pixel units and no caller normalises. ``embedding_backbone`` finds (and checks) the backbone a
dataset's heads were trained on; ``pixel_transforms`` gives the registry's preprocessing minus its Normalize.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from stages.backbones import Backbone, EfficientNetLite0, get_backbone, list_backbones
from stages.embeddings import Precision, embed_images
from stages.errors import PetprobeError
from stages.heads import LogRegHead
from stages.images import load_rgb

__all__ = ["Normalize", "PixelClassifier", "pixel_classifier", "imagenet_classifier", "imagenet_categories",
           "embedding_backbone", "pick_transfer_backbone", "pixel_transforms", "load_images",
           "fit_logreg_head", "predict", "correctly_classified", "transfer_classifier"]


class Normalize(nn.Module):
    """(x - mean) / std per channel, with the backbone's own mean and std."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class PixelClassifier(nn.Module):
    """[0,1] images ``(N, 3, H, W)`` -> ``(N, C)`` logits: Normalize, frozen backbone, head."""

    def __init__(self, normalize: Normalize, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.normalize, self.backbone, self.head = normalize, backbone, head

    def forward(self, x):
        return self.head(self.backbone(self.normalize(x)))


def pixel_classifier(backbone: Backbone, head: nn.Module, net: nn.Module | None = None) -> PixelClassifier:
    """``backbone`` (built unless ``net`` is given) topped by an embeddings -> logits ``head``, frozen, eval."""
    net = backbone.build() if net is None else net
    pre = backbone.preprocessing
    model = PixelClassifier(Normalize(pre.mean, pre.std), net, head)
    return model.eval().requires_grad_(False)


def imagenet_classifier(backbone: Backbone, net: nn.Module) -> PixelClassifier | None:
    """The backbone's own 1000-class ImageNet classifier in pixel space, or None when it has none."""
    if not isinstance(net, EfficientNetLite0):
        return None
    # EfficientNetLite0.classify(x) is _fc(forward(x)): the same network with its ImageNet layer as head.
    return pixel_classifier(backbone, net._fc, net=net)


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names in index order (torchvision metadata; works offline)."""
    from torchvision.models import get_model_weights

    return list(get_model_weights("mobilenet_v2").DEFAULT.meta["categories"])


def embedding_backbone(embeddings: Path) -> tuple[Backbone, dict]:
    """The registry entry the embeddings (and so the heads) were made with, and their meta.json.

    Checked by weights sha256 and preprocessing: a head only fits the exact features it was trained on.
    """
    try:
        meta = json.loads((embeddings / "meta.json").read_text())
        name, sha256, preprocessing = meta["backbone"], meta["weights"]["sha256"], meta["preprocessing"]
    except (OSError, ValueError, KeyError, TypeError):
        raise PetprobeError(f"{embeddings}/meta.json is missing or unreadable; run the embed stage") from None
    backbone = get_backbone(name)
    if backbone.weights.sha256 != sha256 or backbone.preprocessing.as_dict() != preprocessing:
        raise PetprobeError(f"{embeddings} was made with other {name} weights or preprocessing than the installed "
                            "ones; rerun the embed stage (dvc repro)")
    return backbone, meta


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


def pixel_transforms(backbone: Backbone):
    """PIL image -> [0,1] tensor ``(3, crop, crop)``: the registry's transforms without Normalize.

    Taken from the registry's own pipeline so resize, crop and interpolation cannot drift from
    what the embeddings saw; normalisation happens inside ``PixelClassifier``.
    """
    from torchvision.transforms import v2

    steps = backbone.transforms().transforms
    if not isinstance(steps[-1], v2.Normalize):
        raise TypeError(f"{backbone.name}: preprocessing does not end with Normalize")  # a registry bug
    return v2.Compose(steps[:-1])


def load_images(paths, transforms) -> torch.Tensor:
    """Stack ``transforms(load_rgb(path))`` for every path into one ``(N, 3, H, W)`` tensor."""
    try:
        return torch.stack([transforms(load_rgb(path)) for path in paths])
    except OSError as err:
        raise PetprobeError(f"cannot read an image ({err}); rerun prepare") from None


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Softmax probabilities ``(N, C)`` of ``model`` on ``images``, in batches."""
    device = next(model.parameters()).device
    return torch.cat([model(chunk.to(device)).softmax(1).cpu() for chunk in images.split(batch_size)])


def fit_logreg_head(backbone: Backbone, net: nn.Module, splits: dict[str, tuple[list[str], np.ndarray]], *,
                    cs, max_iter: int, batch_size: int, device: torch.device) -> tuple[nn.Module, list[str]]:
    """Embed ``splits`` ({'train'|'val': (paths, labels)}) with ``net`` and fit a ``LogRegHead`` on them.

    The transfer check's second head: trained as train_logreg trains the main one, on a bounded
    number of images so the render stage stays short on a CPU.
    """
    X = {split: np.concatenate(list(embed_images(net, backbone.preprocessing, list(paths), batch_size=batch_size,
                                                 num_workers=0, device=device, precision=Precision("fp32", None),
                                                 desc=f"embed {backbone.name}/{split}")))
         for split, (paths, _) in splits.items()}
    y = {split: labels for split, (_, labels) in splits.items()}
    head = LogRegHead(cs=tuple(cs), max_iter=max_iter).fit(X["train"], y["train"], X.get("val"), y.get("val"))
    return head.to_module(), [str(c) for c in head.classes_]


@torch.no_grad()
def correctly_classified(model: nn.Module, paths: list[str], label: int, n: int, transforms,
                         batch_size: int = 16) -> tuple[list[str], torch.Tensor]:
    """The first ``n`` of ``paths`` (in order) that ``model`` assigns to class index ``label``, loaded."""
    kept_paths, kept = [], []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        images = load_images(chunk, transforms)
        right = (predict(model, images, batch_size).argmax(1) == label).tolist()
        kept_paths += [p for p, ok in zip(chunk, right) if ok]
        kept += [image for image, ok in zip(images, right) if ok]
        if len(kept) >= n:
            break
    if not kept:
        return [], torch.empty(0, 3, 1, 1)
    return kept_paths[:n], torch.stack(kept[:n])


def transfer_classifier(name: str, manifest, *, per_class: int, cs, max_iter: int, batch_size: int,
                        device: torch.device) -> tuple[PixelClassifier, list[str]]:
    """A second pixel classifier: backbone ``name`` + a logistic regression trained here on at most
    ``per_class`` train (and val, to pick C) images per class, in manifest order."""
    backbone = get_backbone(name)
    net = backbone.build()
    splits = {}
    for split in ("train", "val"):
        rows = manifest[manifest.split == split].groupby("label", sort=False).head(per_class)
        splits[split] = (rows.path.tolist(), rows.label.to_numpy())
    head, classes = fit_logreg_head(backbone, net, splits, cs=cs, max_iter=max_iter, batch_size=batch_size,
                                    device=device)
    return pixel_classifier(backbone, head, net=net).to(device), classes
