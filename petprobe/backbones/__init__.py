"""Frozen pretrained backbones: the registry and one module per family.

Importing this package registers every family; ``get_backbone(name)`` then returns its entry.
Names ``timm/<model>`` resolve through the timm family (any timm model with pretrained weights).
Adding a backbone means adding a family module (or a row of ``torchvision_zoo``) and importing it here,
and its name to ``petprobe.catalogue`` (which params.py checks names against; a test holds the two equal).
"""

from petprobe.backbones.registry import Backbone, get_backbone, list_backbones, register_backbone
from petprobe.backbones.weights import PackageWeights, Preprocessing, TorchvisionWeights

# Registered on import, in this order.
from petprobe.backbones import efficientnet_lite, mobilenet, timm_family, torchvision_zoo  # noqa: E402,F401  isort: skip

__all__ = ["Backbone", "Preprocessing", "PackageWeights", "TorchvisionWeights", "get_backbone", "list_backbones",
           "register_backbone"]
