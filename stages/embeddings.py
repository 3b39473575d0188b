"""Frozen-backbone embeddings: computed in batches, streamed to disk, checked when read back.

``embed_images`` runs a backbone over a list of image files and writes float32 rows straight into
a ``.npy`` memmap, so memory stays flat however many images there are. ``load_split`` reads them
back and refuses files that do not match the manifest (wrong image list, truncated array).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from stages.errors import PetprobeError
from stages.images import load_rgb

__all__ = ["ImageFiles", "Precision", "resolve_device", "resolve_precision", "embed_images", "image_list_sha256",
           "load_split", "load_manifest"]


class ImageFiles(Dataset):
    """(index, preprocessed tensor) for each path; the index keeps rows in manifest order."""

    def __init__(self, paths: list[str], transforms):
        self.paths = list(paths)
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            image = load_rgb(self.paths[i])
        except OSError as err:
            raise PetprobeError(f"cannot read {self.paths[i]} ({err}); rerun prepare") from None
        return i, self.transforms(image)


@dataclass(frozen=True)
class Precision:
    """The dtype autocast runs in (None = plain fp32)."""

    name: str
    dtype: torch.dtype | None

    def autocast(self, device: torch.device):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)


def resolve_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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


def embed_images(model: torch.nn.Module, transforms, paths: list[str], out: np.ndarray, *,
                 batch_size: int, num_workers: int, device: torch.device, precision: Precision,
                 desc: str = "embed") -> None:
    """Write the embedding of ``paths[i]`` into ``out[i]`` (``out`` may be a memmap)."""
    loader = DataLoader(ImageFiles(paths, transforms), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, pin_memory=device.type == "cuda",
                        persistent_workers=False, worker_init_fn=_quiet_when_main_is_gone)
    model = model.to(device, memory_format=torch.channels_last)
    with torch.inference_mode(), tqdm(total=len(paths), desc=desc, unit="img") as bar:
        for index, batch in loader:
            batch = batch.to(device, non_blocking=True, memory_format=torch.channels_last)
            with precision.autocast(device):
                rows = model(batch)
            out[index.numpy()] = rows.float().cpu().numpy()
            bar.update(len(index))


def load_manifest(prepared: Path) -> tuple[pd.DataFrame, list[str]]:
    manifest_path, classes_path = prepared / "manifest.csv", prepared / "classes.json"
    for path in (manifest_path, classes_path):
        if not path.is_file():
            raise PetprobeError(f"{path} is missing; run the prepare stage first")
    manifest = pd.read_csv(manifest_path, dtype=str, keep_default_na=False)
    classes = json.loads(classes_path.read_text())
    return manifest, classes


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


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
        raise PetprobeError(f"{meta_path} is not valid JSON ({_one_line(err)}); {rerun}") from None
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
        raise PetprobeError(f"{npy} is unreadable or truncated ({_one_line(err)}); {rerun}") from None
    if not isinstance(array, np.ndarray) or array.shape != (len(rows), dim) or array.dtype != np.float32:
        raise PetprobeError(f"{npy} has shape {getattr(array, 'shape', '?')} {getattr(array, 'dtype', '')}, "
                            f"expected ({len(rows)}, {dim}) float32; {rerun}")
    return array
