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

import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

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
    "catsdogs_group",
]


@dataclass(frozen=True)
class Archive:
    """One official download, tried at ``url`` and then at each of ``fallbacks`` (the same file).

    ``md5`` is the publisher's checksum, where one is published; ``size`` and ``sha256`` are pins
    from another maintained source (named where they are set): a pinned size caps the download and
    must match. An archive with neither md5 nor sha256 has its size and sha256 recorded at the first
    download and a differing one refused (``data.archives.fetch_archive``).
    """

    url: str
    filename: str
    md5: str | None = None
    fallbacks: tuple[str, ...] = ()
    size: int | None = None
    sha256: str | None = None

    @property
    def urls(self) -> tuple[str, ...]:
        return (self.url, *self.fallbacks)


@dataclass(frozen=True)
class Candidate:
    """A file of the raw layout: path relative to the raw folder, its label, its official split."""

    path: str
    label: str | None
    official_split: str | None = None
    problem: str | None = None  # set when the layout itself excludes the file (e.g. unlisted)
    # Files with one group key land in one split (near-duplicates of one photo); None = the file alone.
    group: str | None = None


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


def catsdogs_group(name: str) -> str | None:
    """PetImages names are ``<n>.jpg``; a near-duplicate kept as ``<n>_<k>.jpg`` belongs with ``<n>``.

    The official archive holds only ``<n>.jpg`` (each its own group); the ``_<k>`` form is how
    benchmarks/scale.py names its variants of one sample photo, and how a user can keep their own
    augmented copies out of the other splits. Any other name is its own group.
    """
    match = re.fullmatch(r"(\d+)(?:_\d+)?\.[A-Za-z]+", PurePosixPath(name).name)
    return f"{PurePosixPath(name).parent}/{match.group(1)}" if match else None


def _class_folder_candidates(root_rel: str, group_of: Callable[[str], str | None] = lambda name: None):
    """Labels are the names of the class folders directly under ``raw/<root_rel>``."""

    def list_candidates(raw: Path) -> tuple[list[Candidate], list[str]]:
        root = raw / root_rel if root_rel else raw
        class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not class_dirs:
            raise FileNotFoundError(f"{root} has no class folders (expected <class>/<image> files)")
        candidates = []
        for class_dir in class_dirs:
            for path in _files(class_dir):
                rel = path.relative_to(raw).as_posix()
                candidates.append(Candidate(rel, class_dir.name, group=group_of(rel)))
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
            # md5s as published with torchvision's OxfordIIITPet. The host: the VGG pages retired the
            # www.robots.ox.ac.uk/~vgg/data/pets/data/ URLs (torchvision still lists them) for
            # thor.robots.ox.ac.uk in 2023 (keras-io#1198/#1200: thor.../~vgg/data/pets/); keras-io's
            # example now uses thor.../datasets/pets/. Tried in that order, newest first. Sizes as both
            # hosts send them (Content-Length in public download logs).
            archives=tuple(
                Archive(f"https://thor.robots.ox.ac.uk/datasets/pets/{name}", name, md5,
                        fallbacks=(f"https://thor.robots.ox.ac.uk/~vgg/data/pets/{name}",
                                   f"https://www.robots.ox.ac.uk/~vgg/data/pets/data/{name}"), size=size)
                for name, md5, size in (("images.tar.gz", "5c4f3ee8e5d25df40f4fd59a7f44e54c", 791_918_971),
                                        ("annotations.tar.gz", "95a8c909bbe2e81eed6a22bccdf3f68f", 19_173_078))
            ),
            mirror_dir="oxford-iiit-pet",
            raw_subdir="",
            list_candidates=_pets_candidates,
            official_test=True,
        ),
        DatasetSpec(
            name="catsdogs",
            title="Microsoft Cats vs Dogs (PetImages)",
            # Microsoft publishes no checksum. TFDS pins size and sha256 only for the retired
            # kagglecatsanddogs_3367a.zip (824,894,548 bytes; 404 since 2022, tensorflow/datasets#3918),
            # not for this file. The size is pinned from public download logs of this URL (HTTP
            # Content-Length 824,887,076, 2023 and 2024); the sha256 is recorded at the first download
            # (data/downloads/pinned.json) and a later archive that differs is refused.
            archives=(
                Archive("https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/"
                        "kagglecatsanddogs_5340.zip", "kagglecatsanddogs_5340.zip", size=824_887_076),
            ),
            mirror_dir="PetImages",
            raw_subdir="PetImages",
            list_candidates=_class_folder_candidates("PetImages", catsdogs_group),
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
    groups: list[str | None] | None = None,
) -> list[str]:
    """Stratified, seeded train/val/test assignment.

    Items with an official split keep it: ``test`` stays test and ``trainval`` is divided into
    train and val. Items without one are divided into train/val/test. Within each class, the
    items are sorted by path and permuted by a per-class generator, so the result depends only on
    the seed and the file names, never on listing order.

    ``groups`` (optional, one key or None per item) keeps items with one key together: the
    groups, each ranked by its first path, are permuted instead of the items, and a group goes
    whole to the split in which its first item's rank falls. With every item its own group this
    is exactly the per-item assignment. A group whose items carry several labels (one photo filed
    under two classes) is split with the class of its first path and carries the others along.
    """
    splits = [""] * len(paths)
    groups = groups or [None] * len(paths)
    home: dict[tuple[str, str], str] = {}  # (pool, group) -> the label of the group's first path
    for i in sorted(range(len(paths)), key=lambda i: paths[i]):
        if groups[i] is not None and official[i] != "test":
            home.setdefault((official[i] or "all", groups[i]), labels[i])
    pools: dict[tuple[str, str], list[int]] = {}
    for i, (label, off) in enumerate(zip(labels, official)):
        if off == "test":
            splits[i] = "test"
            continue
        pool = off or "all"
        pools.setdefault((pool, home.get((pool, groups[i]), label)), []).append(i)
    for (pool, label), idx in sorted(pools.items()):
        members: dict[str, list[int]] = {}
        for i in sorted(idx, key=lambda i: paths[i]):
            members.setdefault(groups[i] if groups[i] is not None else f"\0{paths[i]}", []).append(i)
        blocks = list(members.values())  # in order of each group's first path
        order = [blocks[j] for j in _class_rng(seed, label).permutation(len(blocks))]
        n = len(idx)
        n_test = 0 if pool == "trainval" else _share(n, test_fraction)
        n_val = _share(n - n_test, val_fraction / (1.0 - (0.0 if pool == "trainval" else test_fraction)))
        rank = 0
        for block in order:
            split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            for i in block:
                splits[i] = split
            rank += len(block)
    return splits


def _share(n: int, fraction: float) -> int:
    """round(n * fraction), but never all items and at least one when there are two or more."""
    if n < 2:
        return 0
    return min(max(1, int(round(n * fraction))), n - 1)
