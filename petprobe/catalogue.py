"""The names petprobe knows, without the code behind them: registered backbones, built-in datasets, and
the heads with the facts each one carries.

``params.py`` checks ``backbone``, ``render.transfer_backbone`` and ``datasets`` against these
lists at validation, so a typo fails before any work. Importing the registries themselves for that
would put torch, every backbone family and the downloader into every stage's import closure, and
so into every stage's DVC deps. A leaf: it imports nothing. tests/test_params.py checks that each
list equals its registry, so they cannot drift apart. params.py reads the lists here at each
validation, so code that registers a backbone of its own (a test, a plugin) adds its name too.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BACKBONE_NAMES", "TIMM_PREFIX", "BUILTIN_DATASET_NAMES",
           "HeadEntry", "HEADS", "LOGREG", "TORCH_HEAD", "KNN", "FINETUNE", "SCRATCH", "TRAINED", "DEFAULT", "COMPARISONS",
           "get_head"]

# petprobe.backbones' registry (list_backbones()), sorted.
BACKBONE_NAMES = ("convnext_tiny", "efficientnet_b0", "efficientnet_lite0", "mobilenet_v2", "mobilenet_v2_torchvision",
                  "mobilenet_v3_large", "resnet18", "resnet50", "vgg16")
# Names with this prefix are timm models (petprobe.backbones.timm_family), checked against timm itself.
TIMM_PREFIX = "timm/"

# petprobe.data.datasets.BUILTIN_DATASETS, sorted.
BUILTIN_DATASET_NAMES = ("catsdogs", "pets")


# --- heads ----------------------------------------------------------------------------------------
# Every head petprobe trains or compares with, and the facts each one carries.
#
# The one place a head's name is spelled: ``--model`` of ``petprobe predict``, ``render.head`` and
# ``explain.head``, the model file under ``data/models/<ds>/``, the keys of ``metrics/<ds>.json`` and
# the report's rows all come from here. Facts only, no model code (``params`` checks names with it):
# ``heads.trained`` reads a saved head back with the class its entry names.
#
# Adding a head (say a kNN probe): an entry here, its module under ``petprobe/heads/`` (its class
# also listed in ``heads.trained``, whose imports are what dvc.yaml tracks), its params section, its
# training stage.


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
    seeded: its training is random; further models with other seeds (``Artefacts.seed_models``)
        give the spread over seeds that evaluate reports.
    calibrated: temperature-scaled on val; evaluate reports log-loss and ECE before and after and
        draws its reliability diagram.
    """

    name: str
    label: str
    class_name: str = ""
    model_file: str = ""
    predicts: bool = False
    comparison: bool = False
    seeded: bool = False
    calibrated: bool = False


LOGREG = HeadEntry("logreg", "logistic probe", class_name="LogRegHead", model_file="logreg.npz", predicts=True)
TORCH_HEAD = HeadEntry("head", "torch head", class_name="TorchHead", model_file="head.pt", predicts=True,
                       seeded=True, calibrated=True)
# DINO-style weighted kNN: its "model" is the normalised train+val embeddings it votes with.
KNN = HeadEntry("knn", "kNN probe", class_name="KNNHead", model_file="knn.npz", predicts=True)
FINETUNE = HeadEntry("finetune", "fine-tuned last block", comparison=True)
SCRATCH = HeadEntry("scratch", "CNN from scratch", comparison=True)

# Report and metrics order.
HEADS: dict[str, HeadEntry] = {h.name: h for h in (LOGREG, TORCH_HEAD, KNN, FINETUNE, SCRATCH)}
# Heads with a saved model that predict, render and explain can load, and the one they use by default.
TRAINED: tuple[str, ...] = tuple(h.name for h in HEADS.values() if h.predicts)
DEFAULT = TORCH_HEAD.name
COMPARISONS: tuple[str, ...] = tuple(h.name for h in HEADS.values() if h.comparison)


def get_head(name: str) -> HeadEntry:
    """The entry of head ``name``; KeyError for an unknown one."""
    return HEADS[name]
