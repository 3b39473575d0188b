"""Frozen-backbone embeddings: computed in batches, streamed to disk, checked when read back.

``embed_images`` runs a backbone over a list of image files and yields float32 row blocks in
order, which the embed stage appends to a ``.npy`` file (``outputs.NpyRowWriter``), so memory
stays flat however many images there are. The fast path: JPEGs decoded by torchvision.io, resized
and cropped as uint8 in DataLoader worker processes, uint8 batches (pinned on CUDA) moved with
``non_blocking`` and normalised on the device, BatchNorm folded into the convolutions,
channels_last, autocast in the resolved precision. ``load_split`` reads embeddings back and refuses files that do not match the manifest.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from stages.errors import PetprobeError, one_line
from stages.images import load_rgb_tensor

__all__ = ["ImageFiles", "Precision", "fold_batchnorm", "image_batches", "resolve_device", "resolve_precision", "resolve_batch_size",
           "embed_images", "image_list_sha256", "load_split", "load_training_data", "load_manifest"]


class ImageFiles(Dataset):
    """The uint8 centre crop of each path (``Preprocessing.crop_uint8``), or why it cannot be read.

    A read error is returned, not raised: raised inside a worker process it would reach the user
    wrapped in a multi-line traceback instead of one PetprobeError line.
    """

    def __init__(self, paths: list[str], preprocessing):
        self.paths = list(paths)
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor | str:
        try:
            return self.preprocessing.crop_uint8(load_rgb_tensor(self.paths[i]))
        except OSError as err:
            return f"cannot read {self.paths[i]} ({err}); rerun prepare"


def _collate(items: list) -> tuple[torch.Tensor | None, str | None]:
    errors = [item for item in items if isinstance(item, str)]
    return (None, errors[0]) if errors else (torch.stack(items), None)


@dataclass(frozen=True)
class Precision:
    """The dtype autocast runs in (None = plain fp32)."""

    name: str
    dtype: torch.dtype | None

    def autocast(self, device: torch.device):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)


def resolve_device(local_rank: int = 0) -> torch.device:
    """CUDA (this process's GPU under torchrun) when available, else CPU."""
    return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")


# embed.batch_size 0 = these. On CPU throughput is flat beyond ~32 images per batch; a GPU needs
# bigger batches to stay busy, and 128 images of 224 px fit any current GPU for these backbones.
AUTO_BATCH_SIZE = {"cpu": 32, "cuda": 128}


def resolve_batch_size(requested: int, device: torch.device) -> int:
    return requested or AUTO_BATCH_SIZE.get(device.type, 32)


def _cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """auto = bf16 (or fp16) autocast on CUDA, bf16 on CPUs with native bf16, else fp32."""
    if requested == "auto":
        if device.type == "cuda":
            requested = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            requested = "bf16" if _cpu_has_native_bf16() else "fp32"
    if requested == "fp16" and device.type == "cpu":
        raise PetprobeError("embed.precision fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    return Precision(requested, {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[requested])


def image_list_sha256(paths, labels) -> str:
    """Hash of the ordered (path, label) list: identifies exactly which rows an array holds."""
    digest = hashlib.sha256()
    for path, label in zip(paths, labels):
        digest.update(f"{path}\t{label}\n".encode())
    return digest.hexdigest()


def _quiet_when_main_is_gone(_worker_id: int) -> None:
    """DataLoader worker set-up: no traceback when Ctrl-C stops the main process mid-batch.

    A worker hands each batch to the main process over a pipe; if Ctrl-C stops the main process
    during that hand-over, the worker's sharing thread finds the pipe closed and prints a traceback
    under petprobe's one-line "interrupted" message. The main process reports the interruption, so
    a worker drops exactly these errors (a closed pipe) and reports everything else as before.
    """
    report = sys.excepthook

    def hook(kind, value, tb):
        if not issubclass(kind, (BrokenPipeError, ConnectionResetError)):
            report(kind, value, tb)

    sys.excepthook = hook


def fold_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """An inference copy of ``model`` with every BatchNorm2d folded into the Conv2d feeding it.

    On CPU, BatchNorm and the activations after it are memory-bound passes over every feature map
    (about 30% of MobileNetV2's time, profiled); folded, the conv's weights and bias do the same
    affine map for free. A pair is a Conv2d child immediately followed by a BatchNorm2d child of the
    same parent (a Sequential, or attributes like ``_depthwise_conv``/``_bn1``), which is how every
    registered backbone is written; tests/test_backbone_zoo.py checks each one's outputs are unchanged.
    The model must be in eval mode (frozen running statistics), as ``Backbone.build()`` returns it.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        children = list(parent.named_children())
        for (conv_name, conv), (bn_name, bn) in zip(children, children[1:]):
            if (type(bn) is torch.nn.BatchNorm2d and isinstance(conv, torch.nn.Conv2d)
                    and bn.num_features == conv.out_channels):
                setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(parent, bn_name, torch.nn.Identity())
    return model


def image_batches(paths: list[str], preprocessing, *, batch_size: int, num_workers: int,
                  device: torch.device) -> Iterator[torch.Tensor]:
    """Normalised float32 batches (N, 3, crop, crop) of ``paths`` on ``device``, channels_last, in order."""
    loader = DataLoader(ImageFiles(paths, preprocessing), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, collate_fn=_collate, pin_memory=device.type == "cuda",
                        worker_init_fn=_quiet_when_main_is_gone)
    for batch, error in loader:
        if error is not None:
            raise PetprobeError(error)
        batch = preprocessing.normalize(batch.to(device, non_blocking=True))
        yield batch.contiguous(memory_format=torch.channels_last)


def embed_images(model: torch.nn.Module, preprocessing, paths: list[str], *, batch_size: int, num_workers: int,
                 device: torch.device, precision: Precision, desc: str = "embed",
                 progress: bool = True) -> Iterator[np.ndarray]:
    """Yield the float32 embeddings of ``paths`` as row blocks (one per batch), in path order."""
    model = fold_batchnorm(model).to(device, memory_format=torch.channels_last)
    with torch.inference_mode(), tqdm(total=len(paths), desc=desc, unit="img", disable=not progress) as bar:
        for batch in image_batches(paths, preprocessing, batch_size=batch_size, num_workers=num_workers,
                                   device=device):
            with precision.autocast(device):
                rows = model(batch)
            yield rows.float().cpu().numpy()
            bar.update(len(rows))


def load_manifest(prepared: Path) -> tuple[pd.DataFrame, list[str]]:
    manifest_path, classes_path = prepared / "manifest.csv", prepared / "classes.json"
    for path in (manifest_path, classes_path):
        if not path.is_file():
            raise PetprobeError(f"{path} is missing; run the prepare stage first")
    manifest = pd.read_csv(manifest_path, dtype=str, keep_default_na=False)
    classes = json.loads(classes_path.read_text())
    return manifest, classes


def load_split(embeddings: Path, manifest: pd.DataFrame, split: str) -> np.ndarray:
    """The embeddings of one split, verified against the manifest rows they claim to hold."""
    meta_path = embeddings / "meta.json"
    npy = embeddings / f"{split}.npy"
    rerun = "rerun the embed stage (dvc repro)"
    try:
        meta = json.loads(meta_path.read_text())
    except OSError:
        raise PetprobeError(f"{meta_path} is missing; run the embed stage") from None
    except ValueError as err:
        raise PetprobeError(f"{meta_path} is not valid JSON ({one_line(err)}); {rerun}") from None
    try:
        expected, dim = meta["splits"][split], int(meta["dim"])
        listed, n = str(expected["image_list_sha256"]), int(expected["n"])
    except (KeyError, TypeError, ValueError):
        raise PetprobeError(f"{meta_path} does not describe split '{split}' (dim, n, image_list_sha256); {rerun}") from None
    rows = manifest[manifest.split == split]
    if image_list_sha256(rows.path, rows.label) != listed or n != len(rows):
        raise PetprobeError(f"{npy} was computed for another image list than the manifest; {rerun}")
    try:
        array = np.load(npy, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:  # EOFError: a file cut inside its header
        raise PetprobeError(f"{npy} is unreadable or truncated ({one_line(err)}); {rerun}") from None
    if not isinstance(array, np.ndarray) or array.shape != (len(rows), dim) or array.dtype != np.float32:
        raise PetprobeError(f"{npy} has shape {getattr(array, 'shape', '?')} {getattr(array, 'dtype', '')}, "
                            f"expected ({len(rows)}, {dim}) float32; {rerun}")
    return array


def load_training_data(embeddings: Path, manifest: pd.DataFrame) -> tuple[dict, dict]:
    """Embeddings and labels of the train and val splits: ``({split: X}, {split: y})``."""
    X = {split: load_split(embeddings, manifest, split) for split in ("train", "val")}
    y = {split: manifest.label[manifest.split == split].to_numpy() for split in ("train", "val")}
    return X, y
