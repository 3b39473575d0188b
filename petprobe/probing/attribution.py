"""Where in an image a prediction comes from: attribution maps, feature maps, randomised models.

The attribution methods are Captum's (PyTorch's interpretability library), wrapped so each one is
a small object with the same call: ``method(images, targets)`` takes [0,1] images ``(N, 3, H, W)``
and class indices ``(N,)`` and returns non-negative maps ``(N, H, W)``, one value per pixel.

- ``GradCAM`` (Selvaraju et al. 2017): the class score's gradient, averaged per channel, weighs the
  channels of the feature map the backbone's global pooling reads (ReLU of the weighted sum),
  upsampled bilinearly to the image. Coarse (7x7 at 224 px) but class-specific. Which module gives
  that map is a registry fact of each family (``Backbone.feature_map``), not guessed here.
- ``IntegratedGradients`` (Sundararajan et al. 2017): gradients integrated along the straight path
  from a black image to the image, times the pixel difference; the map is the absolute value
  summed over colour channels. Each image's completeness error is measured and reported (the paper
  asks for it within 5%).
- ``RandomMap``: seeded noise, the "random order" baseline of the deletion and insertion curves.

``split_classifier`` builds the model they share, and ``randomised`` the re-initialised copies of
the sanity check (Adebayo et al. 2018). ``feature_maps`` records the backbone's activations.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from petprobe.backbones import Backbone
from petprobe.probing.classifier import PixelClassifier, pixel_classifier

__all__ = ["GradCAM", "IntegratedGradients", "PathAttribution", "COMPLETENESS_TOLERANCE", "RandomMap", "feature_map_layer", "split_classifier", "randomised",
           "feature_maps", "RANDOMISATIONS"]


def split_classifier(backbone: Backbone, head: nn.Module, net: nn.Module | None = None) -> PixelClassifier:
    """``pixel_classifier`` whose backbone is ``Sequential(trunk, tail)``: the same function, with the
    last block's input (``model.backbone[0]``'s output) reachable for Grad-CAM and re-initialisation."""
    net = backbone.build() if net is None else net
    trunk, tail = backbone.split_last_block(net)
    return pixel_classifier(backbone, head, net=nn.Sequential(trunk, tail))


def feature_map_layer(model: nn.Module, backbone: Backbone, net: nn.Module) -> str:
    """The dotted name, inside ``model`` (a classifier built on ``net``), of the module ``backbone``
    names as ``net``'s feature map: the one its global pooling reads, Grad-CAM's layer. A name, not
    the module, so it also finds the layer in a deep copy of ``model`` (``randomised``)."""
    target = backbone.feature_map(net)
    for name, module in model.named_modules():
        if module is target:
            return name
    raise TypeError(f"{backbone.name}: its feature map is not a module of the classifier")  # a registry bug


class GradCAM:
    """Grad-CAM (Selvaraju et al. 2017) at the feature map the backbone's global pooling reads.

    Parameters: ``model``, a ``split_classifier`` or ``pixel_classifier``; ``layer``, the dotted
    name of the module whose output is that map (``feature_map_layer``: each family names it in
    the registry, after its activation). Per image and class: channel weights = the spatial mean of
    the class score's gradient over the map, map = ReLU of the channels' weighted sum, upsampled
    bilinearly to the image. Returns maps ``(N, H, W)`` >= 0. A layer whose output is not a spatial
    map (1x1 or not 4-D) is an error: its maps would be constant, which no measure may pass.
    """

    name = "grad_cam"

    def __init__(self, model: PixelClassifier, layer: str):
        self.model, self.layer = model, layer

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        from captum.attr import LayerAttribution, LayerGradCam

        cam = LayerGradCam(self.model, self.model.get_submodule(self.layer))
        with torch.enable_grad():
            coarse = cam.attribute(images, target=targets, relu_attributions=True)
        if coarse.dim() != 4 or coarse.shape[-2] * coarse.shape[-1] < 2:
            raise TypeError(f"Grad-CAM layer {self.layer} gives {tuple(coarse.shape[1:])}, not a spatial map")
        return LayerAttribution.interpolate(coarse.detach(), tuple(images.shape[-2:]), "bilinear")[:, 0].clamp_min(0)

    def __repr__(self):
        return f"GradCAM(layer={self.layer})"


# Sundararajan et al. (2017, section 4): the attributions should add up to F(x) - F(baseline) within 5%.
COMPLETENESS_TOLERANCE = 0.05


@dataclass
class PathAttribution:
    """Integrated gradients of a batch: signed ``attributions`` ``(N, 3, H, W)`` and, per image, the
    ``completeness_error`` |sum of attributions - (F(x) - F(black))| / |F(x) - F(black)|;
    ``maps`` ``(N, H, W)`` is |attribution| summed over colours."""

    attributions: torch.Tensor
    completeness_error: np.ndarray

    @property
    def maps(self) -> torch.Tensor:
        return self.attributions.abs().sum(1)


class IntegratedGradients:
    """Integrated gradients (Sundararajan et al. 2017) from a black baseline, with their completeness error.

    attribution = x * (integral over a in [0, 1] of dF/dx at a*x), F the target class's logit. The
    integral is the trapezoid rule on ``steps`` equal steps in u, with a = u**``power``: for these
    networks F changes fastest between a black and a very dark image (half of F(x) - F(black) is
    often gained by a = 1/16), and power 3 puts the nodes there (on pets test images, 64 steps
    leave a mean completeness error of 2%; 64 uniform Gauss-Legendre nodes, 8%). ``power`` 1 is
    the plain trapezoid rule. Completeness (attributions sum to F(x) - F(black)) measures the
    quadrature's error, which ``attribute`` reports per image; the steps are fixed, so that error
    is a check of the rule, not its stopping criterion. ``batch_size``: images on the path per pass.
    """

    name = "integrated_gradients"

    def __init__(self, model: nn.Module, steps: int = 64, power: float = 3.0, batch_size: int = 16):
        if steps < 1:
            raise ValueError(f"need steps >= 1, got {steps}")
        self.model, self.steps, self.power, self.batch_size = model, steps, power, batch_size

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.attribute(images, targets).maps

    def attribute(self, images: torch.Tensor, targets: torch.Tensor) -> PathAttribution:
        targets = torch.as_tensor(targets, device=images.device)
        n, p = self.steps, self.power
        # Trapezoid rule over u = k/n, k = 0..n, for g(u) = dF/dx(u**p x) * p u**(p-1); the ends weigh 1/2.
        # At u = 0 the weight p u**(p-1) is 0 for p > 1, so the black image's gradient is needed only at p = 1.
        u = np.arange(0 if p == 1 else 1, n + 1) / n
        halves = np.where((u == 0) | (u == 1), 0.5, 1.0)
        integral = self._weighted_gradients(images, targets, u ** p, halves * p * u ** (p - 1) / n)
        attributions = (images * integral).detach()
        with torch.no_grad():
            score = lambda x: self.model(x).gather(1, targets[:, None])[:, 0].double()  # noqa: E731
            gap = (score(images) - score(torch.zeros_like(images))).cpu().numpy()
        total = attributions.flatten(1).double().sum(1).cpu().numpy()
        return PathAttribution(attributions, np.abs(total - gap) / np.maximum(np.abs(gap), 1e-12))

    def _weighted_gradients(self, images: torch.Tensor, targets: torch.Tensor, alphas: np.ndarray,
                            weights: np.ndarray) -> torch.Tensor:
        """Per image, the sum over nodes of weight * dF/dx at alpha * image, ``(N, 3, H, W)``."""
        pairs = [(j, i) for j in range(len(alphas)) for i in range(len(images))]
        total = torch.zeros_like(images)
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start:start + self.batch_size]
            node = np.array([j for j, _ in chunk])
            which = torch.as_tensor([i for _, i in chunk], device=images.device)
            alpha = torch.as_tensor(alphas[node], dtype=images.dtype, device=images.device).view(-1, 1, 1, 1)
            weight = torch.as_tensor(weights[node], dtype=images.dtype, device=images.device).view(-1, 1, 1, 1)
            with torch.enable_grad():
                inputs = (alpha * images[which]).contiguous(memory_format=torch.channels_last).requires_grad_(True)
                score = self.model(inputs).gather(1, targets[which][:, None]).sum()
                (gradient,) = torch.autograd.grad(score, inputs)
            total.index_add_(0, which, weight * gradient)
        return total

    def __repr__(self):
        return f"IntegratedGradients(baseline=black, steps={self.steps}, power={self.power:g})"


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
