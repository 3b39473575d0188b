"""torchvision backbones: architecture, weights, preprocessing and metadata from torchvision's weights API.

Each entry is pinned to the weights member that is DEFAULT in torchvision 0.29, so a torchvision
upgrade never changes them silently. The network's last Linear (the ImageNet classifier) is
replaced by Identity so ``forward`` gives the pre-logits embedding; the removed layer is kept as
``imagenet_fc``, so the backbone still has its ImageNet head.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from petprobe.backbones.registry import Backbone, register_backbone
from petprobe.backbones.weights import TorchvisionWeights

__all__: list[str] = []


def _torchvision_builder(architecture: str, head: str) -> Callable[[dict], nn.Module]:
    """Build ``architecture`` (weights=None), load the full classifier's state_dict strictly, then
    move the submodule ``head`` (the last Linear) to ``imagenet_fc`` and put Identity in its place."""

    def build(state_dict: dict) -> nn.Module:
        from torchvision.models import get_model

        model = get_model(architecture, weights=None)
        model.load_state_dict(state_dict, strict=True)
        fc = model.get_submodule(head)
        model.set_submodule(head, nn.Identity())
        model.imagenet_fc = fc
        return model

    return build


class _FeaturesTail(nn.Module):
    """``features[start:]`` and what the torchvision model runs after them: pool, (flatten,) classifier."""

    def __init__(self, net: nn.Module, start: int, flatten: bool):
        super().__init__()
        self.features, self.classifier, self.flatten = net.features[start:], net.classifier, flatten
        # MobileNetV2 pools with a functional call instead of an ``avgpool`` module.
        self.avgpool = getattr(net, "avgpool", None) or nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1) if self.flatten else x)


def _features_split(start: int, flatten: bool = True):
    """Trunk = ``features[:start]``, tail = the rest (models built as features, pool, classifier)."""
    return lambda net: (net.features[:start], _FeaturesTail(net, start, flatten))


class _ResNetTrunk(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        n = self.net
        return n.layer3(n.layer2(n.layer1(n.maxpool(n.relu(n.bn1(n.conv1(x)))))))


class _ResNetTail(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.layer4, self.avgpool, self.fc = net.layer4, net.avgpool, net.fc

    def forward(self, x):
        return self.fc(torch.flatten(self.avgpool(self.layer4(x)), 1))


def _resnet_split(net: nn.Module):
    return _ResNetTrunk(net), _ResNetTail(net)


def _last_features(net: nn.Module) -> nn.Module:
    return net.features[-1]


def _layer4(net: nn.Module) -> nn.Module:
    return net.layer4


# (name, architecture, weights enum member, classifier layer to drop, embedding dim, last-block split,
# feature map). The split puts the last stage of blocks (and what follows it) in the trainable tail;
# vgg16 has none (its tail would be the 100M-parameter fully connected layers). The feature map is
# the module whose output the network's average pooling reads: ResNet's last stage (each block ends
# in its ReLU), the last entry of ``features`` elsewhere (a conv-BN-activation block; ConvNeXt's
# last stage, whose LayerNorm comes after the pooling; VGG's last max-pool, pool5, which the
# classifier reads flattened, as VGG has no global pooling).
_TORCHVISION = (
    ("resnet18", "resnet18", "ResNet18_Weights.IMAGENET1K_V1", "fc", 512, _resnet_split, _layer4),
    ("resnet50", "resnet50", "ResNet50_Weights.IMAGENET1K_V2", "fc", 2048, _resnet_split, _layer4),
    ("vgg16", "vgg16", "VGG16_Weights.IMAGENET1K_V1", "classifier.6", 4096, None, _last_features),  # fc7, after ReLU
    ("efficientnet_b0", "efficientnet_b0", "EfficientNet_B0_Weights.IMAGENET1K_V1", "classifier.1", 1280,
     _features_split(-2), _last_features),
    ("convnext_tiny", "convnext_tiny", "ConvNeXt_Tiny_Weights.IMAGENET1K_V1", "classifier.2", 768,
     _features_split(-1, flatten=False), _last_features),  # its classifier starts with LayerNorm2d, Flatten
    ("mobilenet_v3_large", "mobilenet_v3_large", "MobileNet_V3_Large_Weights.IMAGENET1K_V2", "classifier.3", 1280,
     _features_split(-2), _last_features),
    # torchvision's own MobileNetV2 weights, beside the offline reference-implementation ones.
    ("mobilenet_v2_torchvision", "mobilenet_v2", "MobileNet_V2_Weights.IMAGENET1K_V2", "classifier.1", 1280,
     _features_split(-2), _last_features),
)

for _name, _architecture, _weights, _head, _dim, _split, _feature_map in _TORCHVISION:
    register_backbone(Backbone(
        name=_name,
        builder=_torchvision_builder(_architecture, _head),
        weights=TorchvisionWeights(_weights),
        dim=_dim,
        feature_map=_feature_map,
        description=f"torchvision {_architecture}, ImageNet-1k ({_weights.split('.')[1]}), pre-logits embedding",
        imagenet_head=lambda net: net.imagenet_fc,
        last_block=_split,
    ))
