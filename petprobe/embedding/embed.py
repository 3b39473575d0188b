"""Frozen-backbone embeddings, computed in batches and streamed.

``embed_images`` runs a backbone over a list of image files and yields float32 row blocks in
order, which the embed stage appends to a ``.npy`` file (``outputs.NpyRowWriter``), so memory
stays flat however many images there are. The fast path: batches from ``embedding.batches``
(decoded and cropped as uint8 in worker processes, normalised on the device), BatchNorm folded
into the convolutions, channels_last, autocast in the resolved precision (``petprobe.device``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import torch

from petprobe.artefacts import Artefacts
from petprobe.backbones import Backbone, get_backbone
from petprobe.device import Precision
from petprobe.embedding.batches import image_batches
from petprobe.errors import PetprobeError
from petprobe.progress import progress as progress_bar

__all__ = ["fold_batchnorm", "embed_images", "embedding_backbone"]


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

