"""The names petprobe knows, without the code behind them: registered backbones and built-in datasets.

``params.py`` checks ``backbone``, ``render.transfer_backbone`` and ``datasets`` against these
lists at validation, so a typo fails before any work. Importing the registries themselves for that
would put torch, every backbone family and the downloader into every stage's import closure, and
so into every stage's DVC deps. A leaf: it imports nothing. tests/test_params.py checks that each
list equals its registry, so they cannot drift apart. params.py reads the lists here at each
validation, so code that registers a backbone of its own (a test, a plugin) adds its name too.
"""

from __future__ import annotations

__all__ = ["BACKBONE_NAMES", "BUILTIN_DATASET_NAMES"]

# petprobe.backbones' registry (list_backbones()), sorted.
BACKBONE_NAMES = ("convnext_tiny", "efficientnet_b0", "efficientnet_lite0", "mobilenet_v2", "mobilenet_v2_torchvision",
                  "mobilenet_v3_large", "resnet18", "resnet50", "vgg16")

# petprobe.data.datasets.BUILTIN_DATASETS, sorted.
BUILTIN_DATASET_NAMES = ("catsdogs", "pets")
