"""The backbone registry, modelled on torchvision's weights API.

A ``Backbone`` entry carries everything needed to use it, so no code outside its family's module
needs to know which network it is: a builder, where its weights come from (with their sha256),
its preprocessing (``transforms()``; nobody else hard-codes a mean or std), its embedding dim,
its ImageNet classifier when it has one, where its last block starts (for fine-tuning), which module
gives the feature map its global pooling reads (for Grad-CAM) and what is known of it (ImageNet
acc@1, parameter count). ``get_backbone(name).build()`` returns a frozen
``nn.Module`` mapping normalised images ``(N, 3, H, W)`` to embeddings ``(N, dim)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch.nn as nn

from petprobe.backbones.weights import PackageWeights, Preprocessing, TorchvisionWeights, imagenet_categories
from petprobe.errors import PetprobeError

__all__ = ["Backbone", "register_backbone", "register_family", "get_backbone", "list_backbones"]


@dataclass(frozen=True)
class Backbone:
    """A registry entry: ``build()`` gives a frozen network mapping normalised images to ``(N, dim)``.

    ``feature_map(net)`` returns the module of the built network whose output is the last spatial
    feature map, the one its global pooling reads (after its activation): Grad-CAM's layer. It
    runs once per forward pass, also in the ``last_block`` split. ``imagenet_head(net)`` returns
    the built network's ImageNet classifier (embedding -> 1000 logits), ``last_block(net)`` splits
    it into ``(trunk, tail)`` with ``tail(trunk(x)) == net(x)``; either is None when the family
    has no such thing. ``meta`` holds published facts
    (``acc@1`` on ImageNet-1k val, ``num_params``), as torchvision's ``Weights.meta`` does.
    """

    name: str
    builder: Callable[[dict], nn.Module] = field(repr=False)
    weights: PackageWeights | TorchvisionWeights
    dim: int
    feature_map: Callable[[nn.Module], nn.Module] = field(repr=False)
    description: str = ""
    imagenet_head: Callable[[nn.Module], nn.Module] | None = field(default=None, repr=False)
    last_block: Callable[[nn.Module], tuple[nn.Module, nn.Module]] | None = field(default=None, repr=False)
    meta: dict = field(default_factory=dict)

    @property
    def preprocessing(self) -> Preprocessing:
        return self.weights.preprocessing

    def transforms(self):
        return self.preprocessing.transforms()

    @property
    def categories(self) -> list[str] | None:
        """ImageNet class names in logit order, for a backbone with an ImageNet classifier."""
        return imagenet_categories() if self.imagenet_head is not None else None

    def meta_value(self, key: str):
        """A published fact (``acc@1``, ``num_params``): the entry's own, else the torchvision weights' meta."""
        if key in self.meta:
            return self.meta[key]
        if isinstance(self.weights, TorchvisionWeights):
            meta = self.weights.enum.meta
            return meta.get("_metrics", {}).get("ImageNet-1K", {}).get(key) if key.startswith("acc@") else meta.get(key)
        return None

    def split_last_block(self, net: nn.Module) -> tuple[nn.Module, nn.Module]:
        """(trunk, tail) of a built network; the tail is the last block and what follows it."""
        if self.last_block is None:
            raise PetprobeError(f"backbone '{self.name}' has no last-block split (fine-tuning, explain's sanity check); "
                                f"use one of {', '.join(n for n in list_backbones() if get_backbone(n).last_block)}")
        return self.last_block(net)

    def build(self) -> nn.Module:
        """The frozen embedding network in eval mode, weights loaded and checked."""
        model = self.builder(self.weights.load_state_dict())
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model


_REGISTRY: dict[str, Backbone] = {}
# Open families: a name prefix (``timm/``) -> a function giving the entry of the rest of the name.
# Their entries are made on first use and are not listed by ``list_backbones`` (there are thousands).
_FAMILIES: dict[str, Callable[[str], Backbone]] = {}
_RESOLVED: dict[str, Backbone] = {}


def register_backbone(backbone: Backbone) -> Backbone:
    if backbone.name in _REGISTRY:
        raise ValueError(f"backbone '{backbone.name}' is already registered")
    _REGISTRY[backbone.name] = backbone
    return backbone


def register_family(prefix: str, resolve: Callable[[str], Backbone]) -> None:
    """Names ``<prefix><model>`` resolve to ``resolve(model)`` (which raises PetprobeError for an unknown model)."""
    if prefix in _FAMILIES:
        raise ValueError(f"backbone family '{prefix}' is already registered")
    _FAMILIES[prefix] = resolve


def list_families() -> list[str]:
    return sorted(_FAMILIES)


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


def get_backbone(name: str) -> Backbone:
    if name in _REGISTRY:
        return _REGISTRY[name]
    for prefix, resolve in _FAMILIES.items():
        if name.startswith(prefix):
            if name not in _RESOLVED:
                _RESOLVED[name] = resolve(name.removeprefix(prefix))
            return _RESOLVED[name]
    families = "".join(f", any {p}<name>" for p in sorted(_FAMILIES))
    raise PetprobeError(f"unknown backbone '{name}' (valid: {', '.join(list_backbones())}{families})")
