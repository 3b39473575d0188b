"""The trained heads of a dataset, as the training stages saved them.

``load_head`` reads one back (a ``TRAINED`` name of ``catalogue``) from the file
``Artefacts.model(name)`` places it in, with the class its registry entry names.
"""

from __future__ import annotations

from petprobe.artefacts import Artefacts
from petprobe.catalogue import get_head
from petprobe.errors import PetprobeError
from petprobe.heads.knn import KNNHead
from petprobe.heads.logreg import LogRegHead
from petprobe.heads.torch_head import TorchHead

__all__ = ["load_head", "load_seed_heads"]

# The classes of the registry's saved heads. Imported here, not looked up by name at run time, so
# that dvc.yaml's deps (each stage's static import closure) see them.
_CLASSES = {cls.__name__: cls for cls in (LogRegHead, TorchHead, KNNHead)}


def load_head(artefacts: Artefacts, name: str):
    """Load head ``name`` of one dataset; ``Artefacts.model`` refuses names without a saved model."""
    path = artefacts.model(name)
    if not path.is_file():
        raise PetprobeError(f"{path} is missing; train the model first (dvc repro)")
    return _CLASSES[get_head(name).class_name].load(path)


def load_seed_heads(artefacts: Artefacts, name: str) -> dict:
    """Head ``name``'s saved model, first, and for a ``seeded`` head the models of its further seeds
    (``Artefacts.seed_models``), by seed (0 for a head without one)."""
    saved = load_head(artefacts, name)
    if not get_head(name).seeded:
        return {0: saved}
    heads = {saved.random_state: saved}
    folder, suffix = artefacts.seed_models(name), artefacts.model(name).suffix
    for path in sorted(folder.glob(f"seed*{suffix}")) if folder.is_dir() else ():
        head = type(saved).load(path)
        heads[head.random_state] = head
    return heads
