"""Image files to normalised batches on a device: the loader the embed stage and the comparisons share.

JPEGs are decoded by torchvision.io, resized and cropped as uint8 in DataLoader worker processes
(``Preprocessing.crop_uint8``), moved as uint8 (pinned on CUDA) with ``non_blocking`` and
normalised on the device. It needs a backbone's preprocessing, not the backbone registry, so a
stage that trains its own network (scratch) does not depend on the backbones' code.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from petprobe.data.images import load_rgb_tensor
from petprobe.errors import PetprobeError, one_line

__all__ = ["ImageFiles", "image_batches"]


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
        except Exception as err:  # noqa: BLE001 - any decoder failure: one line, never a worker traceback
            return f"cannot read {self.paths[i]} ({type(err).__name__}: {one_line(err)}); rerun prepare"


def _collate(items: list) -> tuple[torch.Tensor | None, str | None]:
    errors = [item for item in items if isinstance(item, str)]
    return (None, errors[0]) if errors else (torch.stack(items), None)


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
