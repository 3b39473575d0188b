"""Any timm model as a backbone: ``backbone: timm/<model name>`` (e.g. ``timm/convnext_tiny.fb_in22k``).

timm's ``pretrained_cfg`` carries each model's preprocessing, so nothing here is per model:

- preprocessing: ``timm.data.resolve_data_config`` of the pretrained config (resize to
  ``floor(size / crop_pct)``, centre-crop ``size``, its interpolation, mean and std), mapped onto
  petprobe's ``Preprocessing`` (the same operations as ``timm.data.create_transform``; timm resizes
  PIL images, petprobe uint8 tensors, which differ by at most 2 of 255 levels in a few pixels).
  Configs that do not map (crop modes ``squash``/``border``, non-square inputs) are refused in one line;
- embedding: the pooled pre-logits feature, ``forward_head(forward_features(x), pre_logits=True)``,
  which is what ``create_model(name, num_classes=0)`` returns; the classifier is kept as the
  ImageNet head when the weights have 1000 classes;
- weights: timm's own loading (Hugging Face hub cache, or torch.hub's for url-only weights),
  downloaded on first use; offline and absent -> one line naming the model and the file looked for;
- Grad-CAM's feature map: the map ``forward_features`` returns for convolutional models (NCHW);
  for plain vision transformers (``blocks`` + ``num_prefix_tokens``) the patch tokens entering the
  last block, reshaped to their grid (their class token is read by that block's attention; the
  last block's output tokens have no gradient with class-token pooling). Other layouts refuse in one line.

No last-block split: fine-tuning and explain's last-block sanity check refuse timm backbones in one line.
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from petprobe.backbones.registry import Backbone, register_family
from petprobe.backbones.weights import Preprocessing
from petprobe.catalogue import TIMM_PREFIX as PREFIX
from petprobe.checksums import file_sha256
from petprobe.errors import PetprobeError

__all__ = ["PREFIX", "TimmWeights", "TimmEmbedding", "timm_backbone", "cached_timm_weights", "hf_cache_dir"]


@dataclass(frozen=True)
class TimmWeights:
    """The pretrained weights of timm model ``model`` (with or without a ``.tag``), with their preprocessing.

    ``pretrained=False`` gives the model's own random initialisation drawn with ``seed`` (tests;
    no file): its ``sha256`` is then that of the initial tensors.
    """

    model: str
    pretrained: bool = True
    seed: int = 0

    @functools.cached_property
    def pretrained_cfg(self):
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(self.model)
        if cfg is None:
            raise PetprobeError(f"timm model '{self.model}' has no pretrained weights (see timm.list_models(pretrained=True))")
        return cfg

    @property
    def preprocessing(self) -> Preprocessing:
        return timm_preprocessing(self.model, self.pretrained_cfg)

    @property
    def files(self) -> list[Path]:
        """Where the weights file is looked for, in timm's order (the first that exists is used)."""
        cfg = self.pretrained_cfg
        if cfg.hf_hub_id:
            repo = hf_cache_dir() / f"models--{cfg.hf_hub_id.split('@')[0].replace('/', '--')}"
            names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
            return [repo / "snapshots" / "<revision>" / name for name in names]
        if cfg.url:
            return [Path(torch.hub.get_dir()) / "checkpoints" / cfg.url.rsplit("/", 1)[-1]]
        return [Path(cfg.file)] if cfg.file else []

    @property
    def path(self) -> Path | None:
        """The cached weights file, or None when it is not cached."""
        cfg = self.pretrained_cfg
        if cfg.hf_hub_id:
            from huggingface_hub import try_to_load_from_cache

            for file in self.files:
                found = try_to_load_from_cache(cfg.hf_hub_id.split("@")[0], file.name, cache_dir=hf_cache_dir())
                if isinstance(found, str):
                    return Path(found)
            return None
        return next((f for f in self.files if f.is_file()), None)

    @property
    def source(self) -> str:
        if not self.pretrained:
            return f"timm {self.model}, random initialisation (seed {self.seed})"
        cfg = self.pretrained_cfg
        return f"timm {cfg.hf_hub_id or cfg.url or cfg.file} ({self.model})"

    @property
    def label(self) -> str:
        return f"timm {self.model}" if self.pretrained else f"timm {self.model} (random init)"

    @property
    def missing_hint(self) -> str:
        return f"downloaded on first use to {self.files[0]}" if self.files else "no weights file"

    def available(self) -> bool:
        return not self.pretrained or self.path is not None

    @property
    def sha256(self) -> str:
        if not self.pretrained:
            digest = hashlib.sha256()
            for name, tensor in self.load_state_dict().items():
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
            return digest.hexdigest()
        if self.path is None:
            self.load_state_dict()  # downloads it, or says in one line why not
        return file_sha256(self.path)

    def load_state_dict(self) -> dict[str, torch.Tensor]:
        """The model's full state_dict (classifier included), as timm loads it (its key filters applied)."""
        import timm

        if not self.pretrained:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                return timm.create_model(self.model, pretrained=False).state_dict()
        cached = self.path
        try:
            if cached is None:
                _check_reachable(self.pretrained_cfg)
            return timm.create_model(self.model, pretrained=True).state_dict()
        except Exception as err:  # huggingface_hub/urllib/safetensors raise many types
            if cached is not None:
                raise PetprobeError(f"timm weights for '{self.model}' at {cached} could not be loaded "
                                    f"({type(err).__name__}); delete the file to download it again") from None
            looked = " or ".join(str(f) for f in self.files) or "nowhere (the config names no file)"
            raise PetprobeError(
                f"timm weights for '{self.model}' are not cached and could not be downloaded ({type(err).__name__}); "
                f"looked for {looked} (HF_HOME / TORCH_HOME set where they are)") from None


def _check_reachable(cfg) -> None:
    """Fail at once when the weights' host cannot be reached (huggingface_hub would retry for a minute)."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") and cfg.hf_hub_id:
        raise ConnectionError("HF_HUB_OFFLINE is set")
    host = "huggingface.co" if cfg.hf_hub_id else urlparse(cfg.url or "").hostname
    if host:
        socket.create_connection((host, 443), timeout=10).close()


def timm_preprocessing(model: str, cfg) -> Preprocessing:
    """petprobe's ``Preprocessing`` for ``resolve_data_config`` of ``cfg``, when it maps exactly; else one line."""
    from timm.data import resolve_data_config

    data = resolve_data_config({}, pretrained_cfg=cfg.to_dict())
    _, height, width = data["input_size"]
    if data.get("crop_mode", "center") != "center" or height != width:
        raise PetprobeError(f"timm model '{model}' preprocesses with crop mode '{data.get('crop_mode')}' at "
                            f"{height}x{width}; petprobe supports centre crops of square inputs only")
    return Preprocessing(resize=math.floor(height / data["crop_pct"]), crop=height, mean=tuple(data["mean"]),
                         std=tuple(data["std"]), interpolation=data["interpolation"])


class _TokenGrid(nn.Module):
    """Identity on ``(N, C, h, w)``: the patch tokens as a grid, so Grad-CAM can hook a spatial map."""

    def forward(self, grid):
        return grid


class _GridTappedBlock(nn.Module):
    """A transformer block whose input patch tokens pass through ``grid`` reshaped to ``(N, C, h, w)``.

    Exact: the tokens are reshaped there and back, so the block sees the same tensor.
    """

    def __init__(self, block: nn.Module, prefix_tokens: int):
        super().__init__()
        self.block, self.prefix_tokens, self.grid = block, prefix_tokens, _TokenGrid()

    def forward(self, x):
        prefix, patches = x[:, :self.prefix_tokens], x[:, self.prefix_tokens:]
        n, tokens, channels = patches.shape
        side = math.isqrt(tokens)
        grid = self.grid(patches.transpose(1, 2).reshape(n, channels, side, side))
        return self.block(torch.cat([prefix, grid.flatten(2).transpose(1, 2)], dim=1))


class TimmEmbedding(nn.Module):
    """A timm model as an embedding network: images -> pooled pre-logits ``(N, dim)``.

    ``feature_map_name`` names the module whose output is Grad-CAM's spatial map (None when the
    model's layout has none petprobe knows); ``classifier`` is the model's own classifier.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.features = nn.Identity()
        self.feature_map_name: str | None = None
        if _is_plain_vit(model):
            model.blocks[-1] = _GridTappedBlock(model.blocks[-1], model.num_prefix_tokens)
            self.feature_map_name = f"model.blocks.{len(model.blocks) - 1}.grid"
        elif getattr(model, "output_fmt", "NCHW") == "NCHW" and not hasattr(model, "num_prefix_tokens"):
            self.feature_map_name = "features"

    @property
    def classifier(self) -> nn.Module:
        return self.model.get_classifier()

    def forward(self, x):
        return self.model.forward_head(self.features(self.model.forward_features(x)), pre_logits=True)


def _is_plain_vit(model: nn.Module) -> bool:
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    return (hasattr(model, "blocks") and isinstance(getattr(model, "num_prefix_tokens", None), int)
            and grid is not None and grid[0] == grid[1] and not getattr(model, "dynamic_img_size", False))


def _feature_map(name: str, net: TimmEmbedding) -> nn.Module:
    if net.feature_map_name is None:
        raise PetprobeError(f"backbone '{name}': Grad-CAM needs a spatial feature map; petprobe finds one in timm "
                            "CNNs (NCHW features) and plain ViTs (token grid), not in this model's layout")
    return net.get_submodule(net.feature_map_name)


def timm_backbone(model: str, *, pretrained: bool = True, seed: int = 0) -> Backbone:
    """The registry entry of timm model ``model`` (``name`` = ``timm/<model>``)."""
    import timm

    weights = TimmWeights(model, pretrained=pretrained, seed=seed)
    cfg = weights.pretrained_cfg
    try:
        with torch.device("meta"):  # shapes and counts only: no memory, no initialisation cost
            shape = timm.create_model(model, pretrained=False)
    except Exception:  # a model whose constructor computes with real tensor values (.item() on meta fails)
        shape = timm.create_model(model, pretrained=False)
    name = PREFIX + model

    def build(state_dict: dict) -> nn.Module:
        net = timm.create_model(model, pretrained=False)
        net.load_state_dict(state_dict, strict=True)
        return TimmEmbedding(net)

    return Backbone(
        name=name,
        builder=build,
        weights=weights,
        dim=getattr(shape, "head_hidden_size", shape.num_features),
        feature_map=functools.partial(_feature_map, name),
        description=f"timm {model} ({cfg.hf_hub_id or cfg.url}), pooled pre-logits",
        imagenet_head=(lambda net: net.classifier) if cfg.num_classes == 1000 and not cfg.label_offset else None,
        meta={"num_params": sum(p.numel() for p in shape.parameters())},
    )


def _resolve(model: str) -> Backbone:
    import timm

    if not timm.is_model_pretrained(model):
        import difflib

        tagged = timm.list_models(pretrained=True)  # "arch.tag"; the bare "arch" means its default tag
        close = difflib.get_close_matches(model, sorted({*tagged, *(m.split(".")[0] for m in tagged)}), n=3)
        raise PetprobeError(f"unknown timm model '{model}' (no pretrained weights in timm {timm.__version__})"
                            + (f"; did you mean {', '.join(PREFIX + c for c in close)}?" if close else ""))
    return timm_backbone(model)


def hf_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_timm_weights() -> list[str]:
    """timm models whose weights are in the Hugging Face hub cache (``timm/<repo>``), sorted."""
    root = hf_cache_dir()
    return sorted(PREFIX + p.name.removeprefix("models--timm--") for p in root.glob("models--timm--*")
                  if any((p / "snapshots").glob("*/*")))


register_family(PREFIX, _resolve)
