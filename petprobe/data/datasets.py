"""Dataset registry: where each dataset comes from, how its raw layout names labels and splits.

A ``DatasetSpec`` carries everything the ``download`` and ``prepare`` stages need, so neither has
an if-chain over dataset names:

- official archives (URL, published checksum) and the mirror folder laid out like the
  extracted archives;
- ``list_candidates(raw_dir)``: every file of the raw layout with its label and, where the
  dataset has one, its official split (``None`` = split by ``data.*`` fractions).

Any folder of ``<class>/<image>`` subfolders becomes a dataset through ``imagefolders:`` in
params.yaml (``imagefolder_spec``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from petprobe.artefacts import SOURCE_RECORD

__all__ = [
    "Archive",
    "Candidate",
    "DatasetSpec",
    "BUILTIN_DATASETS",
    "get_dataset",
    "imagefolder_spec",
    "assign_splits",
    "cap_per_class",
]


@dataclass(frozen=True)
class Archive:
    """One official download. ``md5`` is the publisher's checksum, where one is published;
    ``size`` its size in bytes where it is pinned (then it caps the download and must match)."""

    url: str
    filename: str
    md5: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class Candidate:
    """A file of the raw layout: path relative to the raw folder, its label, its official split."""

    path: str
    label: str | None
    official_split: str | None = None
    problem: str | None = None  # set when the layout itself excludes the file (e.g. unlisted)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    archives: tuple[Archive, ...]
    mirror_dir: str  # folder under data.mirror laid out like the extracted archives
    raw_subdir: str  # where that folder's contents go under data/raw/<ds>/
    list_candidates: Callable[[Path], tuple[list[Candidate], list[str]]] = field(repr=False)
    official_test: bool = False
    # A local folder (imagefolders:) has no official source; it is always copied like a mirror.
    local_path: str | None = None


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())


def _pets_candidates(raw: Path) -> tuple[list[Candidate], list[str]]:
    """Oxford-IIIT Pet: labels and the official trainval/test split come from annotations/*.txt."""
    images, annotations = raw / "images", raw / "annotations"
    listed: dict[str, tuple[str, str, int]] = {}  # image stem -> (breed, official split, class id)
    for split_file, split in (("trainval.txt", "trainval"), ("test.txt", "test")):
        path = annotations / split_file
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; the Oxford-IIIT Pet annotations are incomplete")
        for line in path.read_text().splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            stem, class_id = line.split()[:2]
            listed[stem] = (stem.rsplit("_", 1)[0], split, int(class_id))
    # Class order is the official CLASS-ID order (1..37), not alphabetical.
    by_id = sorted({(cid, breed) for breed, _, cid in listed.values()})
    classes = [breed for _, breed in by_id]
    candidates, seen = [], set()
    for path in _files(images):
        rel = path.relative_to(raw).as_posix()
        entry = listed.get(path.stem) if path.suffix.lower() == ".jpg" else None
        if entry is None:
            candidates.append(Candidate(rel, None, None, "not in the official trainval/test lists"))
            continue
        seen.add(path.stem)
        candidates.append(Candidate(rel, entry[0], entry[1]))
    for stem in sorted(set(listed) - seen):
        candidates.append(Candidate(f"images/{stem}.jpg", listed[stem][0], None, "listed in annotations but missing"))
    return candidates, classes


def _class_folder_candidates(root_rel: str):
    """Labels are the names of the class folders directly under ``raw/<root_rel>``."""

    def list_candidates(raw: Path) -> tuple[list[Candidate], list[str]]:
        root = raw / root_rel if root_rel else raw
        class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not class_dirs:
            raise FileNotFoundError(f"{root} has no class folders (expected <class>/<image> files)")
        candidates = []
        for class_dir in class_dirs:
            for path in _files(class_dir):
                candidates.append(Candidate(path.relative_to(raw).as_posix(), class_dir.name))
        stray = [p for p in root.iterdir() if p.is_file() and not (p.parent == raw and p.name == SOURCE_RECORD)]
        candidates += [Candidate(p.relative_to(raw).as_posix(), None, None, "not inside a class folder") for p in stray]
        return candidates, [d.name for d in class_dirs]

    return list_candidates


BUILTIN_DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="pets",
            title="Oxford-IIIT Pet (37 breeds)",
            # Checksums as published with torchvision's OxfordIIITPet dataset.
            archives=(
                Archive("https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz", "images.tar.gz",
                        "5c4f3ee8e5d25df40f4fd59a7f44e54c"),
                Archive("https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz", "annotations.tar.gz",
                        "95a8c909bbe2e81eed6a22bccdf3f68f"),
            ),
            mirror_dir="oxford-iiit-pet",
            raw_subdir="",
            list_candidates=_pets_candidates,
            official_test=True,
        ),
        DatasetSpec(
            name="catsdogs",
            title="Microsoft Cats vs Dogs (PetImages)",
            # Microsoft publishes no checksum; SOURCE.json records the sha256 of what arrived.
            archives=(
                Archive("https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/"
                        "kagglecatsanddogs_5340.zip", "kagglecatsanddogs_5340.zip"),
            ),
            mirror_dir="PetImages",
            raw_subdir="PetImages",
            list_candidates=_class_folder_candidates("PetImages"),
        ),
    )
}


def imagefolder_spec(name: str, path: str) -> DatasetSpec:
    """A user's folder of ``<class>/<image>`` subfolders, copied into data/raw/<name>/."""
    return DatasetSpec(
        name=name,
        title=f"image folder {path}",
        archives=(),
        mirror_dir="",
        raw_subdir="",
        list_candidates=_class_folder_candidates(""),
        local_path=path,
    )


def get_dataset(name: str, imagefolders: dict[str, str] | None = None) -> DatasetSpec:
    imagefolders = imagefolders or {}
    if name in imagefolders:
        return imagefolder_spec(name, imagefolders[name])
    if name not in BUILTIN_DATASETS:
        valid = ", ".join(sorted({*BUILTIN_DATASETS, *imagefolders}))
        raise KeyError(f"unknown dataset '{name}' (valid: {valid})")
    return BUILTIN_DATASETS[name]


def _class_rng(seed: int, label: str) -> np.random.Generator:
    # One generator per class, keyed by its name: adding or removing a class leaves the
    # other classes' splits unchanged.
    return np.random.default_rng([seed, zlib.crc32(label.encode())])


def cap_per_class(paths: list[str], labels: list[str], groups: list[str], max_per_class: int, seed: int) -> list[bool]:
    """Keep at most ``max_per_class`` items of each (group, label); 0 keeps everything.

    Returns a keep-mask in input order. The choice is a seeded random subset, so a capped
    run is a fair sample rather than the alphabetically first files.
    """
    keep = [True] * len(paths)
    if max_per_class <= 0:
        return keep
    buckets: dict[tuple[str, str], list[int]] = {}
    for i, key in enumerate(zip(groups, labels)):
        buckets.setdefault(key, []).append(i)
    for (group, label), idx in buckets.items():
        if len(idx) <= max_per_class:
            continue
        idx = sorted(idx, key=lambda i: paths[i])
        chosen = set(_class_rng(seed, f"{group}/{label}").permutation(len(idx))[:max_per_class].tolist())
        for j, i in enumerate(idx):
            keep[i] = j in chosen
    return keep


def assign_splits(
    paths: list[str],
    labels: list[str],
    official: list[str | None],
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> list[str]:
    """Stratified, seeded train/val/test assignment.

    Items with an official split keep it: ``test`` stays test and ``trainval`` is divided into
    train and val. Items without one are divided into train/val/test. Within each class, the
    items are sorted by path and permuted by a per-class generator, so the result depends only on
    the seed and the file names, never on listing order.
    """
    splits = [""] * len(paths)
    pools: dict[tuple[str, str], list[int]] = {}
    for i, (label, off) in enumerate(zip(labels, official)):
        if off == "test":
            splits[i] = "test"
            continue
        pools.setdefault((off or "all", label), []).append(i)
    for (pool, label), idx in sorted(pools.items()):
        idx = sorted(idx, key=lambda i: paths[i])
        order = [idx[j] for j in _class_rng(seed, label).permutation(len(idx))]
        n = len(order)
        n_test = 0 if pool == "trainval" else _share(n, test_fraction)
        n_val = _share(n - n_test, val_fraction / (1.0 - (0.0 if pool == "trainval" else test_fraction)))
        for rank, i in enumerate(order):
            splits[i] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return splits


def _share(n: int, fraction: float) -> int:
    """round(n * fraction), but never all items and at least one when there are two or more."""
    if n < 2:
        return 0
    return min(max(1, int(round(n * fraction))), n - 1)
