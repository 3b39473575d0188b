"""Where in an image a prediction comes from: attribution maps, feature maps, randomised models.

The attribution methods are Captum's (PyTorch's interpretability library), wrapped so each one is
a small object with the same call: ``method(images, targets)`` takes [0,1] images ``(N, 3, H, W)``
and class indices ``(N,)`` and returns non-negative maps ``(N, H, W)``, one value per pixel.

- ``GradCAM`` (Selvaraju et al. 2017): the class score's gradient, averaged per channel, weighs the
  channels of the feature map at the backbone's last block (ReLU of the weighted sum), upsampled
  bilinearly to the image. Coarse (7x7 at 224 px) but class-specific.
- ``IntegratedGradients`` (Sundararajan et al. 2017): gradients integrated along the straight path
  from a black image to the image, times the pixel difference; the map is the absolute value
  summed over colour channels.
- ``RandomMap``: seeded noise, the "random order" baseline of the deletion and insertion curves.

``split_classifier`` builds the model they share, and ``randomised`` the re-initialised copies of
the sanity check (Adebayo et al. 2018). ``feature_maps`` records the backbone's activations.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from petprobe.backbones import Backbone
from petprobe.probing.classifier import PixelClassifier, pixel_classifier

__all__ = ["GradCAM", "IntegratedGradients", "RandomMap", "last_feature_layer", "split_classifier", "randomised",
           "feature_maps", "RANDOMISATIONS"]


def split_classifier(backbone: Backbone, head: nn.Module, net: nn.Module | None = None) -> PixelClassifier:
    """``pixel_classifier`` whose backbone is ``Sequential(trunk, tail)``: the same function, with the
    last block's input (``model.backbone[0]``'s output) reachable for Grad-CAM and re-initialisation."""
    net = backbone.build() if net is None else net
    trunk, tail = backbone.split_last_block(net)
    return pixel_classifier(backbone, head, net=nn.Sequential(trunk, tail))


class GradCAM:
    """Grad-CAM at the backbone's last convolutional feature map (the input of its global pooling).

    That layer is found, not named: the last module of ``model.backbone`` to return a 4-D tensor,
    so it works for any registered family. Parameters: ``model``, a ``split_classifier``.
    Returns maps ``(N, H, W)`` >= 0.
    """

    name = "grad_cam"

    def __init__(self, model: PixelClassifier):
        self.model = model

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        from captum.attr import LayerAttribution, LayerGradCam

        cam = LayerGradCam(self.model, last_feature_layer(self.model.backbone, self.model.normalize(images[:1])))
        with torch.enable_grad():
            coarse = cam.attribute(images, target=targets, relu_attributions=True)
        return LayerAttribution.interpolate(coarse.detach(), tuple(images.shape[-2:]), "bilinear")[:, 0].clamp_min(0)

    def __repr__(self):
        return "GradCAM(layer=last convolutional feature map)"


@torch.no_grad()
def last_feature_layer(net: nn.Module, example: torch.Tensor) -> nn.Module:
    """The module of ``net`` whose 4-D output finishes last in a forward pass of ``example``."""
    last: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda m, i, o: last.append(m) if isinstance(o, torch.Tensor) and o.dim() == 4
                                     else None) for m in net.modules()]
    try:
        net(example)
    finally:
        for hook in hooks:
            hook.remove()
    if not last:
        raise TypeError(f"{type(net).__name__} has no 4-D feature map")  # a registry bug, not user input
    return last[-1]


class IntegratedGradients:
    """Integrated gradients from a black baseline in ``steps`` steps (Gauss-Legendre, Captum's default).

    The map is |attribution| summed over the colour channels.
    """

    name = "integrated_gradients"

    def __init__(self, model: nn.Module, steps: int = 16, batch_size: int = 16):
        self.model, self.steps, self.batch_size = model, steps, batch_size

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        from captum.attr import IntegratedGradients as CaptumIG

        ig = CaptumIG(self.model)
        with torch.enable_grad():
            maps = ig.attribute(images, baselines=torch.zeros_like(images), target=targets, n_steps=self.steps,
                                internal_batch_size=self.batch_size)
        return maps.detach().abs().sum(1)

    def __repr__(self):
        return f"IntegratedGradients(baseline=black, steps={self.steps})"


class RandomMap:
    """Uniform noise from a seeded generator: ranks pixels in a random order."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        return torch.rand(images.shape[0], *images.shape[-2:], generator=generator)

    def __repr__(self):
        return f"RandomMap(seed={self.seed})"


# Adebayo et al.'s cascading randomisation, top down: the head, then the head and the last block.
RANDOMISATIONS = ("head", "head_last_block")


def randomised(model: PixelClassifier, part: str, seed: int = 0) -> PixelClassifier:
    """A copy of a ``split_classifier`` with the weights of ``part`` (one of ``RANDOMISATIONS``) re-drawn.

    Convolution and linear weights get their layer's default initialisation from a seeded draw;
    batch-norm statistics are kept, so activations stay in a sane range.
    """
    if part not in RANDOMISATIONS:
        raise ValueError(f"unknown randomisation {part!r} (valid: {', '.join(RANDOMISATIONS)})")
    copy_ = copy.deepcopy(model)
    parts = [copy_.head] + ([copy_.backbone[1]] if part == "head_last_block" else [])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in parts:
            for layer in module.modules():
                if isinstance(layer, (nn.Conv2d, nn.Linear)):
                    layer.reset_parameters()
    return copy_.eval().requires_grad_(False)


@torch.no_grad()
def feature_maps(net: nn.Module, image: torch.Tensor, depths: int = 4) -> list[tuple[str, torch.Tensor]]:
    """Activations ``(C, h, w)`` of the normalised ``image`` ``(3, H, W)`` at ``depths`` depths, early to late.

    A depth is a spatial resolution; at each one the last block to finish is recorded (a block: a
    top-level layer or an entry of a Sequential/ModuleList, as the families list their stages), and
    ``depths`` of them are taken evenly from first to last.
    Returned with their module names, channels ordered most active (mean activation) first.
    """
    last_at: dict[tuple[int, int], tuple[str, torch.Tensor]] = {}
    hooks = []
    blocks = [(name, module) for name, module in net.named_children()]
    blocks += [(f"{name}.{child}", sub) for name, module in net.named_modules()
               if isinstance(module, (nn.Sequential, nn.ModuleList)) for child, sub in module.named_children()]
    for name, module in blocks:
        name = name.lstrip(".")

        def record(_module, _inputs, output, name=name):
            if isinstance(output, torch.Tensor) and output.dim() == 4:
                last_at[tuple(output.shape[-2:])] = (name, output[0])

        hooks.append(module.register_forward_hook(record))
    try:
        net(image[None])
    finally:
        for hook in hooks:
            hook.remove()
    sizes = sorted(last_at, key=lambda hw: -hw[0] * hw[1])  # resolutions shrink with depth
    picks = sorted({round(i * (len(sizes) - 1) / max(depths - 1, 1)) for i in range(depths)}) if sizes else []
    out = []
    for i in picks:
        name, activation = last_at[sizes[i]]
        order = activation.mean((1, 2)).argsort(descending=True)
        out.append((name, activation[order]))
    return out
