"""Grad-CAM at each registered family's named feature map, against a reference written here.

The reference does not use the registry's layer or Captum: it runs the whole network and records
the input of its last average-pooling call (``F.adaptive_avg_pool2d`` or a mean over the two
spatial dims, whichever the family uses), which is by definition the map its pooling consumes;
gradients come from ``torch.autograd.grad``; channel weights are their spatial mean, the map the
ReLU of the weighted sum, upsampled bilinearly as Selvaraju et al. do. Families whose weights are not
on this machine are built with torchvision's random initialisation (``weights=None``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from petprobe.backbones import TorchvisionWeights, get_backbone, list_backbones
from petprobe.data.images import load_images
from petprobe.device import Precision
from petprobe.embedding.embed import embed_images
from petprobe.heads.logreg import LogRegHead
from petprobe.probing.attribution import GradCAM, feature_map_layer, randomised, split_classifier
from petprobe.probing.classifier import pixel_classifier, pixel_transforms

pytestmark = pytest.mark.integration

# What torchvision's forward computes from the pooling's output to give the registered embedding
# (the ImageNet Linear replaced by Identity); for every other family the embedding is that output.
AFTER_POOLING = {
    "convnext_tiny": lambda net, pooled: net.classifier(pooled),  # LayerNorm2d, Flatten
    "mobilenet_v3_large": lambda net, pooled: net.classifier(torch.flatten(pooled, 1)),  # Linear, Hardswish
    "vgg16": lambda net, pooled: net.classifier(torch.flatten(pooled, 1)),  # fc6, fc7 on the flattened 7x7 pool5
}
# vgg16 has no global pooling: its AdaptiveAvgPool2d(7) keeps pool5's 7x7 map for the classifier.
NOT_GLOBAL = {"vgg16"}
# Random initialisation: torchvision's, from this seed.
SEED = 0
# The registry's torchvision entry -> torchvision's architecture name, where they differ.
ARCHITECTURE = {"mobilenet_v2_torchvision": "mobilenet_v2"}


class PoolingInputs(TorchFunctionMode):
    """Records (input, output) of every average-pooling call: adaptive_avg_pool2d, or a mean over dims (2, 3)."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        dims = kwargs.get("dim", args[1] if len(args) > 1 else None)
        spatial_mean = (func in (torch.mean, torch.Tensor.mean) and isinstance(args[0], torch.Tensor)
                        and args[0].dim() == 4 and dims is not None
                        and sorted(d % 4 for d in ((dims,) if isinstance(dims, int) else dims)) == [2, 3])
        if func is F.adaptive_avg_pool2d or spatial_mean:
            self.calls.append((args[0], out))
        return out


def built(name: str) -> nn.Module:
    """The registered network with its real weights when they are here, else torchvision's random init."""
    backbone = get_backbone(name)
    if backbone.weights.available():
        return backbone.build()
    assert isinstance(backbone.weights, TorchvisionWeights), f"{name}: no weights here and no random init known"
    from torchvision.models import get_model

    torch.manual_seed(SEED)
    state = get_model(ARCHITECTURE.get(name, name), weights=None).state_dict()
    return backbone.builder(state).eval().requires_grad_(False)


def reference_grad_cam(model: nn.Module, images: torch.Tensor, targets: torch.Tensor):
    """(maps (N, H, W), the pooling's input map, its output), from the whole network's own forward."""
    images = images.clone().requires_grad_(True)  # so the pooling's input is in the autograd graph
    with PoolingInputs() as mode:
        logits = model(images)
    feature, pooled = mode.calls[-1]  # the last pooling call of the forward pass: the global one
    score = logits.gather(1, targets[:, None]).sum()
    (gradient,) = torch.autograd.grad(score, feature)
    weights = gradient.mean((2, 3), keepdim=True)
    cam = torch.relu((weights * feature).sum(1, keepdim=True))
    maps = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return maps.detach(), feature.detach(), pooled.detach()


@pytest.fixture(scope="module")
def photos(cat_dog_images):
    return cat_dog_images


@pytest.mark.parametrize("name", list_backbones())
def test_grad_cam_is_the_map_global_pooling_reads(name, photos):
    backbone = get_backbone(name)
    net = built(name)
    # The embeddings exactly as the embed stage makes them (its BatchNorm folding, in fp32), and a
    # logistic head fit on them that tells the 8 photos apart (each its own class), so each map
    # explains a trained decision. (With two classes, cat and dog, a random network's map of one
    # class is often all zero: the other class's weighted sum is positive everywhere.)
    X = np.concatenate(list(embed_images(net, backbone.preprocessing, [str(p) for p in photos], batch_size=8,
                                         num_workers=0, device=torch.device("cpu"),
                                         precision=Precision("fp32", None), progress=False)))
    head = LogRegHead(cs=(0.1,)).fit(X, np.array([p.parent.name + p.stem for p in photos])).to_module()
    # The stage's classifier: split at the last block where the family has one.
    model = (split_classifier(backbone, head, net=net) if backbone.last_block
             else pixel_classifier(backbone, head, net=net))
    # A cat and a dog. A network can give a photo an all-zero map (its class-weighted sum negative
    # everywhere, which the explain stage counts as a constant map): random-init vgg16 does for some
    # photos. So the first cat and the first dog whose *reference* map has a spread are taken.
    everything = load_images(photos, pixel_transforms(backbone))
    with torch.no_grad():
        all_targets = model(everything).argmax(1)
    spread = reference_grad_cam(pixel_classifier(backbone, head, net=net), everything, all_targets)[0].flatten(1).std(1)
    cat = next(i for i in range(len(photos)) if photos[i].parent.name == "Cat" and spread[i] > 0)
    dog = next(i for i in range(len(photos)) if photos[i].parent.name == "Dog" and spread[i] > 0)
    images, targets = everything[[cat, dog]], all_targets[[cat, dog]]
    layer = feature_map_layer(model, backbone, net)
    maps = GradCAM(model, layer)(images, targets)

    # Not constant: each image's map has a spread.
    assert maps.shape == (2, 224, 224) and (maps.flatten(1).std(1) > 0).all()
    # Equal to the reference computed from the whole network's pooling input.
    expected, feature, pooled = reference_grad_cam(pixel_classifier(backbone, head, net=net), images, targets)
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-5 * float(expected.max()))
    # The registry's layer gives that very map...
    seen = []
    hook = model.get_submodule(layer).register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        model(images)
    hook.remove()
    assert len(seen) == 1 and seen[0].shape[-2:] == (7, 7)
    torch.testing.assert_close(seen[0], feature, rtol=1e-5, atol=1e-5)
    # ...and that map, pooled, is the embedding the embed stage writes for these two photos.
    if name not in NOT_GLOBAL:
        torch.testing.assert_close(pooled.flatten(1), feature.mean((2, 3)))
    with torch.no_grad():
        embedding = AFTER_POOLING.get(name, lambda net, pooled: torch.flatten(pooled, 1))(net, pooled)
    torch.testing.assert_close(embedding, torch.from_numpy(X[[cat, dog]]), rtol=1e-4, atol=1e-4)


def test_a_layer_with_no_spatial_extent_is_refused(photos):
    """The old guess hooked torchvision's pooled C x 1 x 1 output: every map constant. That is an error now."""
    backbone = get_backbone("resnet18")
    net = built("resnet18")
    model = split_classifier(backbone, nn.Linear(backbone.dim, 2), net=net)
    images = load_images(photos[:2], pixel_transforms(backbone))
    pooled = next(name for name, m in model.named_modules() if m is net.avgpool)
    with pytest.raises(TypeError, match="not a spatial map"):
        GradCAM(model, pooled)(images, torch.tensor([0, 1]))


def test_the_layer_name_finds_the_same_map_in_a_randomised_copy(photos):
    backbone = get_backbone("efficientnet_lite0")
    net = backbone.build()
    model = split_classifier(backbone, nn.Linear(backbone.dim, 2), net=net)
    layer = feature_map_layer(model, backbone, net)
    other = randomised(model, "head_last_block", seed=0)
    assert other.get_submodule(layer) is not model.get_submodule(layer)
    assert type(other.get_submodule(layer)) is nn.ReLU6
