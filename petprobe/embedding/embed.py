"""Frozen-backbone embeddings, computed in batches and streamed.

``embed_images`` runs a backbone over a list of image files and yields float32 row blocks in
order, which the embed stage appends to a ``.npy`` file (``outputs.NpyRowWriter``), so memory
stays flat however many images there are. The fast path: JPEGs decoded by torchvision.io, resized
and cropped as uint8 in DataLoader worker processes, uint8 batches (pinned on CUDA) moved with
``non_blocking`` and normalised on the device, BatchNorm folded into the convolutions,
channels_last, autocast in the resolved precision (``petprobe.device``).
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from petprobe.artefacts import Artefacts
from petprobe.backbones import Backbone, get_backbone
from petprobe.data.images import load_rgb_tensor
from petprobe.device import Precision
from petprobe.errors import PetprobeError, one_line
from petprobe.progress import progress as progress_bar

__all__ = ["ImageFiles", "fold_batchnorm", "image_batches", "embed_images", "embedding_backbone"]


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
    with torch.inference_mode(), progress_bar(total=len(paths), desc=desc, unit="img", disable=not progress) as bar:
        for batch in image_batches(paths, preprocessing, batch_size=batch_size, num_workers=num_workers,
                                   device=device):
            with precision.autocast(device):
                rows = model(batch)
            yield rows.float().cpu().numpy()
            bar.update(len(rows))


def embedding_backbone(artefacts: Artefacts) -> tuple[Backbone, dict]:
    """The registry entry a dataset's embeddings (and so its heads) were made with, and their meta.json.

    Checked by weights sha256 and preprocessing: a head only fits the exact features it was trained on.
    """
    meta = artefacts.read_embeddings_meta()
    backbone = get_backbone(meta["backbone"])
    if backbone.weights.sha256 != meta["weights"]["sha256"] or backbone.preprocessing.as_dict() != meta["preprocessing"]:
        raise PetprobeError(f"{artefacts.embeddings} was made with other {backbone.name} weights or preprocessing "
                            "than the installed ones; rerun the embed stage (dvc repro)")
    return backbone, meta

