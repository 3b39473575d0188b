"""Integrated gradients and their completeness error, against Captum and a hand-computed case."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from petprobe.backbones import get_backbone
from petprobe.data.images import load_images
from petprobe.probing.attribution import IntegratedGradients
from petprobe.probing.classifier import pixel_transforms


@pytest.fixture(scope="module")
def small_classifier(cat_dog_classifier):
    """efficientnet_lite0 + a logreg head fit on 8 cat/dog photos; two of them (a cat, a dog) at
    112 px, so the gradient passes below stay cheap (the network takes any size)."""
    model, _, images = cat_dog_classifier
    images = F.interpolate(images[[0, 4]], size=(112, 112), mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        targets = model(images).argmax(1)
    return model, images, targets


@pytest.mark.integration
def test_power_one_is_captums_trapezoid_rule(small_classifier):
    """power 1: the trapezoid rule on n steps, i.e. Captum's riemann_trapezoid on the same n + 1
    nodes. Captum weighs them 1/(n + 1) (halved at the ends) although they are 1/n apart, so its
    weights sum to n/(n + 1); scaled back by (n + 1)/n it is the trapezoid rule."""
    from captum.attr import IntegratedGradients as CaptumIG

    model, images, targets = small_classifier
    ours = IntegratedGradients(model, steps=6, power=1.0, batch_size=5).attribute(images, targets)
    theirs = CaptumIG(model).attribute(images, baselines=torch.zeros_like(images), target=targets, n_steps=7,
                                       method="riemann_trapezoid") * 7 / 6
    torch.testing.assert_close(ours.attributions, theirs, rtol=1e-4, atol=1e-4 * float(theirs.abs().max()))


@pytest.mark.integration
def test_reported_completeness_error_is_captums_convergence_delta(small_classifier):
    from captum.attr import IntegratedGradients as CaptumIG

    model, images, targets = small_classifier
    result = IntegratedGradients(model, steps=4).attribute(images, targets)
    baseline = torch.zeros_like(images)
    delta = CaptumIG(model).compute_convergence_delta(result.attributions, baseline, images, target=targets)
    with torch.no_grad():
        gap = (model(images) - model(baseline)).gather(1, targets[:, None])[:, 0]
    np.testing.assert_allclose(result.completeness_error, (delta.abs() / gap.abs()).numpy(), rtol=1e-4, atol=1e-6)
    assert (result.completeness_error > 0.05).any()  # 4 steps are too few: the check has something to see


class Squared(nn.Module):
    """Logit 0 = (w . x)^2: integrated gradients from 0 are x_i w_i (w . x), exactly (Sundararajan et al.'s
    completeness, by hand: the path integral of 2 a (w . x) w_i over a in [0, 1] is (w . x) w_i)."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = w

    def forward(self, x):
        z = (x * self.w).flatten(1).sum(1)
        return torch.stack([z ** 2, torch.zeros_like(z)], 1)


# The trapezoid rule's sum for the integral in u (exactly 1) of f = p u**(p-1) * 2 u**p, h = 1/n:
# by Euler-Maclaurin 1 + h**2/12 (f'(1) - f'(0)) - h**4/720 (f^(3)(1) - f^(3)(0)), exact for these polynomials.
HAND_COMPUTED = {2.0: lambda h: 1 + h ** 2, 3.0: lambda h: 1 + 2.5 * h ** 2 - 0.5 * h ** 4}


@pytest.mark.unit
@pytest.mark.parametrize("power", sorted(HAND_COMPUTED))
@pytest.mark.parametrize("steps", [1, 3, 10])
def test_graded_rule_on_a_hand_computed_case(steps, power, cat_dog_images):
    """With a = u**p, the integrand in u is p u**(p-1) * 2 u**p (w . x) w_i, a polynomial: the rule gives
    the exact attribution times the trapezoid sum above, and a completeness error of that sum - 1."""
    x = load_images(cat_dog_images[:2], pixel_transforms(get_backbone("efficientnet_lite0"))).double()
    w = torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(0), dtype=torch.float64) / 100
    result = IntegratedGradients(Squared(w), steps=steps, power=power).attribute(x, torch.tensor([0, 0]))
    exact = x * w * (x * w).flatten(1).sum(1).view(-1, 1, 1, 1)
    factor = HAND_COMPUTED[power](1 / steps)
    torch.testing.assert_close(result.attributions, exact * factor, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(result.completeness_error, factor - 1, rtol=1e-8)
