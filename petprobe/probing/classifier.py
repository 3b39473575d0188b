"""Whole classifiers in pixel space: [0,1] images in, logits out, for rendering, attacks and attribution.

``PixelClassifier`` is one ``nn.Module``: the registry's Normalize, the frozen backbone, a head. It
takes images ``(N, 3, H, W)`` in [0,1] and returns ``(N, C)`` logits, so eps and step sizes stay in
pixel units and no caller normalises. ``pixel_transforms`` gives the registry's preprocessing minus
its Normalize; ``correctly_classified`` picks the test images an attack should start from.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from petprobe.backbones import Backbone
from petprobe.data.images import load_images
from petprobe.heads.training import predict_proba

__all__ = ["Normalize", "PixelClassifier", "pixel_classifier", "head_classifier", "imagenet_classifier", "pixel_transforms",
           "correctly_classified"]


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


def head_classifier(backbone: Backbone, trained, net: nn.Module, device) -> tuple[PixelClassifier, list[str]]:
    """A trained head (``heads.trained.load_head``) on ``net`` in pixel space, on ``device``, and its class names."""
    return pixel_classifier(backbone, trained.to_module(), net=net).to(device), [str(c) for c in trained.classes_]


def imagenet_classifier(backbone: Backbone, net: nn.Module) -> PixelClassifier | None:
    """The backbone's own 1000-class ImageNet classifier in pixel space, or None when it has none."""
    if backbone.imagenet_head is None:
        return None
    return pixel_classifier(backbone, backbone.imagenet_head(net), net=net)


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


@torch.no_grad()
def correctly_classified(model: nn.Module, paths: list[str], label: int, n: int, transforms,
                         batch_size: int = 16) -> tuple[list[str], torch.Tensor]:
    """The first ``n`` of ``paths`` (in order) that ``model`` assigns to class index ``label``, loaded."""
    kept_paths, kept = [], []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        images = load_images(chunk, transforms)
        right = (predict_proba(model, images, batch_size=batch_size).argmax(1) == label).tolist()
        kept_paths += [p for p, ok in zip(chunk, right) if ok]
        kept += [image for image, ok in zip(images, right) if ok]
        if len(kept) >= n:
            break
    if not kept:
        return [], torch.empty(0, 3, 1, 1)
    return kept_paths[:n], torch.stack(kept[:n])
