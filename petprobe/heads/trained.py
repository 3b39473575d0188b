"""The trained heads of a dataset, as the training stages saved them.

``HEADS`` maps each head's name (the ``--model`` of ``petprobe predict``, ``render.head``) to its
class; ``load_head`` reads one back from the file ``Artefacts.model(name)`` places it in.
"""

from __future__ import annotations

from petprobe.artefacts import Artefacts
from petprobe.errors import PetprobeError
from petprobe.heads.logreg import LogRegHead
from petprobe.heads.torch_head import TorchHead

__all__ = ["HEADS", "load_head"]

HEADS = {"logreg": LogRegHead, "head": TorchHead}


def load_head(artefacts: Artefacts, name: str):
    """Load head ``name`` (``logreg`` or ``head``) of one dataset; ``Artefacts.model`` refuses other names."""
    path = artefacts.model(name)
    if not path.is_file():
        raise PetprobeError(f"{path} is missing; train the model first (dvc repro)")
    return HEADS[name].load(path)
