"""What render's ideal images are made for and judged by, and what its report says of them.

For each ideal image, render.json records p(target) on the image as optimised, the mean over 16
new draws of the optimisation's transforms and over 16 draws of a held-out transform family,
under the other trained head and under the transfer backbone (as it is and under the held-out
draws), with their mean/min/max over the dataset's classes' images and the chance level
(``ideal_record``). Ideal images of ImageNet classes (backbones with an ImageNet classifier) are
made too, judged by no other model.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from petprobe.backbones import Backbone
from petprobe.data.images import load_images
from petprobe.probing.classifier import imagenet_classifier
from petprobe.probing.visualise import IdealTarget, Judge, color_sqrt, ideal_summary

__all__ = ["ideal_targets", "train_colour", "ideal_record"]

_OWN_MEASURES = ("p_target_optimised", "p_target_optimisation_transforms", "p_target_heldout_transforms")


def ideal_targets(model: nn.Module, classes: list[str], wanted: list[str], *,
                  judges: dict[str, tuple[nn.Module, list[str]]], backbone: Backbone, net: nn.Module,
                  imagenet_classes: list[int], device: torch.device) -> dict[str, IdealTarget]:
    """``{"": the dataset's classes, "imagenet_": ImageNet classes}``: the ``wanted`` classes ``model``
    has (else its first two), each judged by ``judges`` (``{name: (model, its class names)}``), and
    the ``imagenet_classes`` of the backbone's own classifier when it has one."""
    names = [c for c in wanted if c in classes] or classes[:2]
    targets = {"": IdealTarget(model, names, [classes.index(c) for c in names], {
        name: Judge(judge, [judge_classes.index(c) if c in judge_classes else None for c in names])
        for name, (judge, judge_classes) in judges.items()})}
    if (imagenet := imagenet_classifier(backbone, net)) is not None:
        names = [f"{i} {backbone.categories[i]}" for i in imagenet_classes]
        targets["imagenet_"] = IdealTarget(imagenet.to(device), names, list(imagenet_classes))
    return targets


def train_colour(manifest, transforms, images: int = 16) -> torch.Tensor:
    """``color_sqrt`` of about ``images`` training images, as many of every class (manifest order
    puts one class first, so the first rows would be one class's colours)."""
    train = manifest[manifest.split == "train"]
    sample = train.groupby("label", sort=False).head(max(1, images // train.label.nunique()))
    return color_sqrt(load_images(sample.path, transforms))


def ideal_record(report: dict, targets: dict[str, IdealTarget], n_classes: int) -> dict:
    """render.json's ``ideal`` (``report`` of ``ideal_images_of``) and ``ideal_summary``: each
    measure's mean/min/max over the dataset's classes' images, and the chance level 1/classes."""
    judged = [f"p_target_{name}{kind}" for name in targets[""].judges for kind in ("", "_heldout_transforms")]
    summary = ideal_summary(report, [*_OWN_MEASURES, *judged])
    return {"ideal": report, "ideal_summary": {**summary, "chance": round(1 / n_classes, 6)}}
