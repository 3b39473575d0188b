"""Every head petprobe trains or compares with, and the facts each one carries.

The one place a head's name is spelled: ``--model`` of ``petprobe predict``, ``render.head`` and
``explain.head``, the model file under ``data/models/<ds>/``, the keys of ``metrics/<ds>.json`` and
the report's rows all come from here. Facts only, no model code (``params`` checks names with it):
``heads.trained`` reads a saved head back with the class its entry names.

Adding a head (say a kNN probe): an entry here, its module under ``petprobe/heads/`` (its class
also listed in ``heads.trained``, whose imports are what dvc.yaml tracks), its params section, its
training stage.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HeadEntry", "HEADS", "LOGREG", "TORCH_HEAD", "FINETUNE", "SCRATCH", "TRAINED", "DEFAULT", "COMPARISONS",
           "get_head"]


@dataclass(frozen=True)
class HeadEntry:
    """One head: its name and where its model and numbers live.

    name: the key everywhere (``--model``, ``render.head``, ``metrics/<ds>.json``, the report).
    label: how the report and docs call it.
    class_name: the class that fits, saves and loads it (``heads.trained``); "" for a comparison,
        whose stage trains a whole network and keeps only its numbers.
    model_file: its saved model under ``data/models/<ds>/`` ("" when none is saved).
    predicts: whether ``petprobe predict``, render and explain can use it (a saved head on the
        backbone's embeddings).
    comparison: an optional reference stage that writes its test numbers to
        ``metrics/<ds>/<name>.json`` (``{"enabled": false}`` when switched off).
    """

    name: str
    label: str
    class_name: str = ""
    model_file: str = ""
    predicts: bool = False
    comparison: bool = False


LOGREG = HeadEntry("logreg", "logistic probe", class_name="LogRegHead", model_file="logreg.npz", predicts=True)
TORCH_HEAD = HeadEntry("head", "torch head", class_name="TorchHead", model_file="head.pt", predicts=True)
FINETUNE = HeadEntry("finetune", "fine-tuned last block", comparison=True)
SCRATCH = HeadEntry("scratch", "CNN from scratch", comparison=True)

# Report and metrics order.
HEADS: dict[str, HeadEntry] = {h.name: h for h in (LOGREG, TORCH_HEAD, FINETUNE, SCRATCH)}
# Heads with a saved model that predict, render and explain can load, and the one they use by default.
TRAINED: tuple[str, ...] = tuple(h.name for h in HEADS.values() if h.predicts)
DEFAULT = TORCH_HEAD.name
COMPARISONS: tuple[str, ...] = tuple(h.name for h in HEADS.values() if h.comparison)


def get_head(name: str) -> HeadEntry:
    """The entry of head ``name``; KeyError for an unknown one."""
    return HEADS[name]
