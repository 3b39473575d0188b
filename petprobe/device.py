"""Where and in what precision petprobe computes: one policy for every stage and ``petprobe predict``.

CUDA when available (this process's GPU under torchrun), else CPU. ``embed.precision: auto`` means
bf16 (or fp16) autocast on CUDA, bf16 on CPUs with native bf16 (avx512_bf16 / AMX), else fp32.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from petprobe.errors import PetprobeError

__all__ = ["Precision", "resolve_device", "resolve_precision", "resolve_batch_size", "AUTO_BATCH_SIZE"]


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

