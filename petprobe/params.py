"""The one schema for params.yaml, validated once at the start of every stage.

``load_params()`` returns a frozen ``Params`` whose sections are frozen dataclasses. Any unknown
key (a typo passed with ``dvc exp run -S``), wrong type, out-of-range value or unknown
backbone/dataset name raises ``PetprobeError`` with one line naming the key and the valid choices.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import reprlib
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from petprobe import catalogue
from petprobe.catalogue import DEFAULT, TRAINED
from petprobe.errors import PetprobeError, one_line, shorten
from petprobe.names import check_dataset_name

__all__ = [
    "Params",
    "DataParams",
    "EmbedParams",
    "LogregParams",
    "HeadParams",
    "KnnParams",
    "FewshotParams",
    "FinetuneParams",
    "ScratchParams",
    "EvaluateParams",
    "RenderParams",
    "ExplainParams",
    "load_params",
    "parse_params",
    "check_dataset_name",
]

def _spec(default=dataclasses.MISSING, **rules):
    """A field with validation rules: choices, ge, gt, le, lt, min_len."""
    if isinstance(default, (list, dict)):
        frozen = default
        return field(default_factory=lambda: type(frozen)(frozen), metadata=rules)
    return field(default=default, metadata=rules)


# Upper bounds (le=...) stop a typo from asking for absurd memory or processes (embed.num_workers:
# 10000, head.hidden: 10**9); they are far above any useful value. Every integer has both bounds
# (tests/test_params.py checks it).
SEED_MAX = 2**32 - 1  # numpy's and torch's seeds must fit in 32 bits


def _seed(default: int):
    return _spec(default, ge=0, le=SEED_MAX)



@dataclass(frozen=True)
class DataParams:
    source: str = _spec("auto", choices=("auto", "mirror", "official", "sample"))
    mirror: str = _spec("../shared/datasets")
    val_fraction: float = _spec(0.2, gt=0.0, lt=1.0)
    test_fraction: float = _spec(0.2, gt=0.0, lt=1.0)
    seed: int = _seed(42)
    max_per_class: int = _spec(0, ge=0, le=10**9)
    # Near-duplicates (petprobe.data.phash, .duplicates): kept in one split where the split is petprobe's own,
    # and audited across splits by the duplicates stage either way.
    group_near_duplicates: bool = _spec(True)
    near_duplicate_bits: int = _spec(8, ge=0, le=32)  # pHash: at most this many of 64 bits differ
    near_duplicate_cosine: float = _spec(0.9, gt=0.0, le=1.0)  # centred embedding cosine at or above it


@dataclass(frozen=True)
class EmbedParams:
    batch_size: int = _spec(0, ge=0, le=4096)  # 0 = auto: 32 on CPU, 128 on CUDA (device.AUTO_BATCH_SIZE)
    num_workers: int = _spec(2, ge=0, le=64)
    precision: str = _spec("auto", choices=("auto", "fp32", "bf16", "fp16"))


@dataclass(frozen=True)
class LogregParams:
    c_min: float = _spec(1e-6, gt=0.0)
    c_max: float = _spec(1e5, gt=0.0)
    c_steps: int = _spec(45, ge=1, le=1000)
    max_iter: int = _spec(3000, ge=1, le=10**6)
    tol: float = _spec(1e-4, gt=0.0, lt=1.0)  # converged: gradient <= tol x the penalty's gradient
    cv_folds: int = _spec(5, ge=2, le=100)
    seed: int = _seed(0)


@dataclass(frozen=True)
class HeadParams:
    hidden: int = _spec(1024, ge=0, le=65536)
    dropout: float = _spec(0.5, ge=0.0, lt=1.0)
    lr: float = _spec(1e-3, gt=0.0)
    weight_decay: float = _spec(1e-2, ge=0.0)
    batch_size: int = _spec(64, ge=1, le=65536)
    max_epochs: int = _spec(200, ge=1, le=100_000)
    patience: int = _spec(20, ge=1, le=100_000)
    refit: bool = _spec(True)
    seed: int = _seed(0)  # the saved model's (predict, render, explain)
    spread_seeds: list[int] = _spec([1, 2, 3, 4])  # further seeds, trained only to measure the spread over seeds


@dataclass(frozen=True)
class KnnParams:
    k: int = _spec(20, ge=1, le=100_000)  # neighbours that vote
    temperature: float = _spec(0.07, gt=0.0, le=100.0)  # vote weight exp(cosine similarity / temperature)


@dataclass(frozen=True)
class FewshotParams:
    shots: list[int] = _spec([1, 2, 5, 10, 20, 0], min_len=1)  # images per class; 0 = all
    draws: int = _spec(5, ge=1, le=1000)  # random draws per k
    seed: int = _seed(0)


@dataclass(frozen=True)
class FinetuneParams:
    enabled: bool = _spec(False)
    epochs: int = _spec(3, ge=1, le=10_000)
    lr: float = _spec(1e-4, gt=0.0)
    batch_size: int = _spec(32, ge=1, le=4096)
    seed: int = _seed(0)


@dataclass(frozen=True)
class ScratchParams:
    enabled: bool = _spec(False)
    epochs: int = _spec(10, ge=1, le=10_000)
    lr: float = _spec(2e-3, gt=0.0)
    batch_size: int = _spec(32, ge=1, le=4096)
    image_size: int = _spec(64, ge=16, le=1024)
    seed: int = _seed(0)


@dataclass(frozen=True)
class EvaluateParams:
    grid_images: int = _spec(16, ge=1, le=256)


@dataclass(frozen=True)
class RenderParams:
    seed: int = _seed(0)
    head: str = _spec(DEFAULT, choices=TRAINED)  # which trained head the images are made for
    # Ideal images: classes not in a dataset are skipped, so one list serves every dataset.
    classes: list[str] = _spec(["Cat", "Dog", "Abyssinian", "Siamese", "american_bulldog", "yorkshire_terrier"])
    imagenet_classes: list[int] = _spec([284, 340])  # only for backbones with an ImageNet classifier
    image_size: int = _spec(224, ge=32, le=1024)
    steps: int = _spec(64, ge=1, le=100_000)
    lr: float = _spec(0.05, gt=0.0)
    tv_weight: float = _spec(0.05, ge=0.0)
    l2_weight: float = _spec(0.01, ge=0.0)
    # Targeted attacks, [source, target] by class name; pairs not in a dataset are skipped.
    pairs: list[list[str]] = _spec([["Dog", "Cat"], ["Cat", "Dog"], ["Abyssinian", "Siamese"],
                                    ["american_bulldog", "yorkshire_terrier"], ["Bengal", "havanese"]])
    n_images: int = _spec(32, ge=1, le=100_000)
    eps: list[float] = _spec([1 / 255, 2 / 255, 4 / 255, 8 / 255], min_len=1)
    pgd_steps: int = _spec(10, ge=1, le=100_000)
    pgd_alpha: float = _spec(0.25, gt=0.0)  # PGD step size, as a fraction of eps
    random_start: bool = _spec(True)
    unbounded_alpha: float = _spec(1 / 255, gt=0.0)
    unbounded_steps: int = _spec(50, ge=1, le=100_000)
    transfer_backbone: str = _spec("auto")  # auto = another registered backbone; none = skip
    transfer_per_class: int = _spec(50, ge=1, le=100_000)
    batch_size: int = _spec(16, ge=1, le=1024)
    grid_images: int = _spec(4, ge=1, le=64)


@dataclass(frozen=True)
class ExplainParams:
    seed: int = _seed(0)
    head: str = _spec(DEFAULT, choices=TRAINED)  # which trained head is explained
    # Measured images (test split, those with a trimap first): localisation, then the first of them
    # for deletion/insertion and the sanity check.
    n_images: int = _spec(32, ge=1, le=100_000)
    faithfulness_images: int = _spec(12, ge=0, le=100_000)
    sanity_images: int = _spec(4, ge=0, le=100_000)
    # Integrated-gradients path steps (trapezoid rule, nodes denser near the black baseline); each
    # measured image's completeness error is reported.
    ig_steps: int = _spec(64, ge=1, le=4096)
    curve_steps: int = _spec(8, ge=2, le=10_000)  # points of the deletion/insertion curves, after the clean image
    deletion: str = _spec("road", choices=("road", "blur", "black"))  # what a deleted square becomes
    sanity_threshold: float = _spec(0.5, gt=0.0, le=1.0)  # rank correlation at or above it flags a method
    # Shown images: per class present, plus the most confident mistakes; feature maps of the first few.
    per_class: int = _spec(1, ge=0, le=1000)
    mistakes: int = _spec(4, ge=0, le=1000)
    feature_images: int = _spec(2, ge=0, le=1000)
    feature_depths: int = _spec(4, ge=1, le=64)
    feature_channels: int = _spec(8, ge=1, le=4096)
    batch_size: int = _spec(16, ge=1, le=4096)


@dataclass(frozen=True)
class Params:
    datasets: list[str] = _spec(["pets", "catsdogs"], min_len=1)
    imagefolders: dict[str, str] = _spec({})
    backbone: str = _spec("efficientnet_lite0")
    data: DataParams = field(default_factory=DataParams)
    embed: EmbedParams = field(default_factory=EmbedParams)
    logreg: LogregParams = field(default_factory=LogregParams)
    head: HeadParams = field(default_factory=HeadParams)
    knn: KnnParams = field(default_factory=KnnParams)
    fewshot: FewshotParams = field(default_factory=FewshotParams)
    finetune: FinetuneParams = field(default_factory=FinetuneParams)
    scratch: ScratchParams = field(default_factory=ScratchParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    render: RenderParams = field(default_factory=RenderParams)
    explain: ExplainParams = field(default_factory=ExplainParams)

    def check_dataset(self, name: str) -> str:
        """Return ``name`` if it is one of ``datasets``, else raise with the valid names."""
        if name not in self.datasets:
            raise PetprobeError(
                f"dataset '{name}' is not in params.yaml 'datasets' (valid: {', '.join(sorted(self.datasets))})"
            )
        return name


# params.yaml is read whole and walked: these bound what a hostile file can cost (a 20,000-deep
# nesting overflowed the stack; an 8-level YAML alias bomb of 1 KB expanded to 43 million values
# and a 351 MB error line). The real file is about 5 KB, 4 levels and 150 values deep.
MAX_PARAMS_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_VALUES = 100_000
# Values are quoted in error lines through this: a few items of each list, a short prefix of each string.
_SHOW = reprlib.Repr()
_SHOW.maxlevel, _SHOW.maxlist, _SHOW.maxdict, _SHOW.maxstring, _SHOW.maxother, _SHOW.maxlong = 3, 6, 6, 80, 80, 40


def _show(value) -> str:
    return shorten(_SHOW.repr(value), 200)


# Quoted strings and comments, whose brackets are text, not nesting.
_NOT_FLOW = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\n]|\'\')*\'|(?:^|(?<=\s))#[^\n]*', re.M)


def _flow_depth(text: str) -> int:
    """The deepest nesting of YAML flow collections (``[`` and ``{``) in ``text``, counted before
    parsing: PyYAML scans a run of nested ``[`` in quadratic time (20,000 of them: 11 s), before
    its recursion would stop it."""
    depth = deepest = 0
    for bracket in re.findall(r"[\[\]{}]", _NOT_FLOW.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _check_shape(raw) -> None:
    """Refuse a params mapping nested deeper than MAX_DEPTH or holding more than MAX_VALUES values,
    counting a YAML alias every place it is used (iteratively: no recursion to overflow)."""
    stack, seen = [(raw, 1)], 0
    while stack:
        value, depth = stack.pop()
        seen += 1
        if depth > MAX_DEPTH or seen > MAX_VALUES:
            raise PetprobeError(f"params.yaml nests deeper than {MAX_DEPTH} levels or holds more than {MAX_VALUES:,} "
                                "values (counting each use of a YAML alias); it is not a petprobe params file")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def _choices_line(names) -> str:
    return ", ".join(sorted(names))


def _closest(name: str, choices) -> str:
    """``; closest: a, b`` naming the valid choices nearest a typo (difflib's ratio >= 0.6), or nothing."""
    close = difflib.get_close_matches(name, sorted(choices), n=3)
    return f"; closest: {', '.join(close)}" if close else ""


def _check_type(value, tp, key: str):
    origin = typing.get_origin(tp)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PetprobeError(f"params.yaml: '{key}' must be a number, got {_show(value)}")
        if not math.isfinite(value):  # YAML's .inf / .nan pass every range check
            raise PetprobeError(f"params.yaml: '{key}' must be a finite number, got {_show(value)}")
        return float(value)
    if tp in (int, str, bool):
        if isinstance(value, bool) != (tp is bool) or not isinstance(value, tp):
            raise PetprobeError(f"params.yaml: '{key}' must be {tp.__name__}, got {_show(value)}")
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise PetprobeError(f"params.yaml: '{key}' must be a list, got {_show(value)}")
        return [_check_type(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_tp, item_tp = typing.get_args(tp)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise PetprobeError(f"params.yaml: '{key}' must be a mapping, got {_show(value)}")
        return {_check_type(k, key_tp, f"{key} key"): _check_type(v, item_tp, f"{key}.{k}") for k, v in value.items()}
    raise TypeError(f"unsupported schema type {tp!r} for {key}")  # a bug in this module, not user input


def _check_rules(value, rules: dict, key: str) -> None:
    if "choices" in rules and value not in rules["choices"]:
        raise PetprobeError(f"params.yaml: '{key}' is {_show(value)}; valid: {_choices_line(rules['choices'])}")
    bounds = {"ge": (">=", lambda a, b: a >= b), "gt": (">", lambda a, b: a > b),
              "le": ("<=", lambda a, b: a <= b), "lt": ("<", lambda a, b: a < b)}
    for rule, (sign, ok) in bounds.items():
        if rule in rules and not ok(value, rules[rule]):
            raise PetprobeError(f"params.yaml: '{key}' is {_show(value)}; it must be {sign} {rules[rule]}")
    if "min_len" in rules and len(value) < rules["min_len"]:
        raise PetprobeError(f"params.yaml: '{key}' must hold at least {rules['min_len']} entry")


def _build(cls, raw, prefix: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise PetprobeError(f"params.yaml: '{prefix or 'top level'}' must be a mapping, got {_show(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(raw) - set(fields), key=str)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise PetprobeError(
            f"params.yaml: unknown key '{where}{unknown[0]}' (valid: {_choices_line(where + k for k in fields)})"
        )
    values = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = _build(tp, raw.get(name), key)
            continue
        if name not in raw:
            continue  # the dataclass default applies
        value = _check_type(raw[name], tp, key)
        _check_rules(value, f.metadata, key)
        values[name] = value
    return cls(**values)


def parse_params(raw: dict) -> Params:
    """Validate a params mapping (as read from params.yaml) against the schema."""
    _check_shape(raw)  # first: walking a hostile shape must cost nothing else
    params = _build(Params, raw, "")
    for name in params.imagefolders:
        check_dataset_name(name, "params.yaml: 'imagefolders' key")
    for i, name in enumerate(params.datasets):
        check_dataset_name(name, f"params.yaml: 'datasets[{i}]'")
    _check_backbone("backbone", params.backbone)
    clash = sorted(set(params.imagefolders) & set(catalogue.BUILTIN_DATASET_NAMES))
    if clash:
        raise PetprobeError(f"params.yaml: 'imagefolders.{clash[0]}' reuses a built-in dataset name; pick another")
    known = set(catalogue.BUILTIN_DATASET_NAMES) | set(params.imagefolders)
    for i, name in enumerate(params.datasets):
        if name not in known:
            raise PetprobeError(
                f"params.yaml: 'datasets[{i}]' is '{name}', not a known dataset (valid: {_choices_line(known)};"
                " add your own under 'imagefolders')" + _closest(name, known)
            )
    if len(set(params.datasets)) != len(params.datasets):
        raise PetprobeError("params.yaml: 'datasets' lists a name twice")
    if params.logreg.c_min > params.logreg.c_max:
        raise PetprobeError("params.yaml: 'logreg.c_min' must not exceed 'logreg.c_max'")
    if params.data.val_fraction + params.data.test_fraction >= 1.0:
        raise PetprobeError("params.yaml: 'data.val_fraction' + 'data.test_fraction' must be < 1")
    _check_render(params.render, catalogue.BACKBONE_NAMES)
    _check_seeds("head.spread_seeds", params.head.spread_seeds, params.head.seed)
    shots = params.fewshot.shots
    if any(not 0 <= k <= 100_000 for k in shots) or len(set(shots)) != len(shots):
        raise PetprobeError("params.yaml: 'fewshot.shots' must hold distinct image counts per class in [0, 100000] (0 = all)")
    return params


def _check_seeds(key: str, seeds: list[int], main: int) -> None:
    if any(not 0 <= s <= SEED_MAX for s in seeds) or len({main, *seeds}) != len(seeds) + 1:
        raise PetprobeError(f"params.yaml: '{key}' must hold distinct seeds in [0, {SEED_MAX}], none equal to the "
                            f"saved model's ({main})")


def _check_render(render: RenderParams, backbones: tuple[str, ...]) -> None:
    for i, pair in enumerate(render.pairs):
        if len(pair) != 2 or pair[0] == pair[1]:
            raise PetprobeError(f"params.yaml: 'render.pairs[{i}]' must be [source, target], two different classes")
    for i, eps in enumerate(render.eps):
        if not 0.0 < eps <= 1.0:
            raise PetprobeError(f"params.yaml: 'render.eps[{i}]' is {_show(eps)}; it must be in (0, 1] (pixel units)")
    for i, index in enumerate(render.imagenet_classes):
        if not 0 <= index < 1000:
            raise PetprobeError(f"params.yaml: 'render.imagenet_classes[{i}]' is {_show(index)}; it must be in [0, 1000)")
    valid = ["auto", "none", *backbones]
    if render.transfer_backbone.startswith(catalogue.TIMM_PREFIX):
        _check_backbone("render.transfer_backbone", render.transfer_backbone)
    elif render.transfer_backbone not in valid:
        raise PetprobeError(f"params.yaml: 'render.transfer_backbone' is '{render.transfer_backbone}' "
                            f"(valid: {_choices_line(valid)}, timm/<model>)" + _closest(render.transfer_backbone, valid))


def _check_backbone(key: str, name: str) -> None:
    """A registered backbone, or ``timm/<model>`` naming a timm model with pretrained weights.

    timm names are checked against timm itself (``timm.list_models(pretrained=True)``), imported
    here only for a ``timm/`` name: a copied list would go stale with each timm release, and the
    import (1-5 s) is paid only by those who chose a timm backbone.
    """
    if name.startswith(catalogue.TIMM_PREFIX):
        import timm

        model = name.removeprefix(catalogue.TIMM_PREFIX)
        if not timm.is_model_pretrained(model):
            tagged = timm.list_models(pretrained=True)  # "arch.tag"; the bare "arch" means its default tag
            known = [catalogue.TIMM_PREFIX + m for m in {*tagged, *(m.split(".")[0] for m in tagged)}]
            raise PetprobeError(f"params.yaml: '{key}' is '{name}', not a timm model with pretrained weights "
                                f"(timm {timm.__version__})" + _closest(name, known))
        return
    if name not in catalogue.BACKBONE_NAMES:
        raise PetprobeError(
            f"params.yaml: '{key}' is '{name}', not a known backbone (valid: {_choices_line(catalogue.BACKBONE_NAMES)}"
            f", or {catalogue.TIMM_PREFIX}<model> for any timm model with pretrained weights)"
            + _closest(name, catalogue.BACKBONE_NAMES)
        )


def load_params(path: str | Path = "params.yaml", *, dataset: str | None = None) -> Params:
    """Read and validate params.yaml (by default the one in the current directory, the repo root).

    ``dataset``: a stage's dataset argument, which must be one of ``datasets``.
    """
    path = Path(path)
    try:
        if (size := path.stat().st_size) > MAX_PARAMS_BYTES:
            raise PetprobeError(f"{path} is {size:,} bytes, over the {MAX_PARAMS_BYTES:,}-byte limit of a params file")
        text = path.read_text()
    except FileNotFoundError:
        raise PetprobeError(f"{path} not found; run from the repository root") from None
    except (OSError, UnicodeDecodeError) as err:
        raise PetprobeError(f"{path} is unreadable ({one_line(err)})") from None
    if _flow_depth(text) > MAX_DEPTH:
        raise PetprobeError(f"{path} nests too deeply to be a petprobe params file (at most {MAX_DEPTH} levels)")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise PetprobeError(f"{path} is not valid YAML: {one_line(err)}") from None
    except RecursionError:  # the YAML parser recurses once per nesting level
        raise PetprobeError(f"{path} nests too deeply to be a petprobe params file (at most {MAX_DEPTH} levels)") from None
    params = parse_params(raw or {})
    if dataset is not None:
        params.check_dataset(dataset)
    return params
