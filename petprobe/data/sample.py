"""The embedded mini-sample: a few real Oxford-IIIT Pet photos per breed, shipped inside petprobe.

Like scikit-learn's ``load_sample_images``, it lets the tests and a quick run work in a plain clone,
offline. ``sample_data/oxford-iiit-pet/`` is in the official layout (``images/``, the official lists
restricted to its photos, ``annotations/trimaps/``); ``sample_data/LICENSE.md`` gives the licence
(CC BY-SA 4.0) and what was changed. The cats-vs-dogs dataset is made from the same photos when it is
copied: ``PetImages/{Cat,Dog}/<n>.jpg``, as the Microsoft archive names them, labelled by the
official SPECIES column and numbered breed by breed in turn (the first photo of every cat breed, then
the second...), so no image of unclear licence ships. It is chosen only by ``data.source: sample``;
``auto`` never falls back to it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from petprobe.checksums import tree_digest

__all__ = ["SAMPLE_DIR", "SAMPLE_LAYOUTS", "write_sample", "sample_mirror"]

SAMPLE_DIR = Path(__file__).resolve().parent / "sample_data"
_PETS = "oxford-iiit-pet"
_SPECIES = {"1": "Cat", "2": "Dog"}  # the official list's SPECIES column


def _species_order() -> dict[str, list[str]]:
    """Photo stems per species, breed by breed in turn (official list order within a breed)."""
    lines = (SAMPLE_DIR / _PETS / "annotations" / "list.txt").read_text().splitlines()
    by_breed: dict[tuple[str, str], list[str]] = {}
    for line in lines:
        if line.startswith("#") or not line.strip():
            continue
        stem, _class_id, species, _breed_id = line.split()
        by_breed.setdefault((_SPECIES[species], stem.rsplit("_", 1)[0]), []).append(stem)
    order: dict[str, list[str]] = {"Cat": [], "Dog": []}
    for species in order:
        breeds = [stems for (sp, _), stems in by_breed.items() if sp == species]
        for rank in range(max(map(len, breeds))):
            order[species] += [stems[rank] for stems in breeds if rank < len(stems)]
    return order


def _copy_pets(dest: Path) -> None:
    shutil.copytree(SAMPLE_DIR / _PETS, dest, dirs_exist_ok=True)


def _write_cats_dogs(dest: Path) -> None:
    for species, stems in _species_order().items():
        (dest / species).mkdir(parents=True, exist_ok=True)
        for n, stem in enumerate(stems, start=1):
            shutil.copyfile(SAMPLE_DIR / _PETS / "images" / f"{stem}.jpg", dest / species / f"{n}.jpg")


# mirror folder name (DatasetSpec.mirror_dir) -> how the sample writes that dataset's layout
SAMPLE_LAYOUTS = {_PETS: _copy_pets, "PetImages": _write_cats_dogs}


def write_sample(mirror_dir: str, dest: Path) -> None:
    """Write the sample's ``mirror_dir`` dataset (a key of SAMPLE_LAYOUTS) into ``dest``, laid out as its archive."""
    SAMPLE_LAYOUTS[mirror_dir](Path(dest))


def sample_mirror(root: Path | None = None) -> Path:
    """A folder laid out like ``data.mirror`` (every dataset of the sample), made once and reused.

    It lives under ``root`` (default: the system temp folder), named by the sample's digest, and is
    written under a temp name and renamed, so concurrent callers never see half of it.
    """
    root = Path(root or tempfile.gettempdir())
    _, _, digest = tree_digest(SAMPLE_DIR)
    final = root / f"petprobe-sample-{digest[:16]}"
    if final.is_dir():
        return final
    tmp = Path(tempfile.mkdtemp(prefix=".petprobe-sample-", dir=root))
    for mirror_dir in SAMPLE_LAYOUTS:
        write_sample(mirror_dir, tmp / mirror_dir)
    try:
        os.rename(tmp, final)
    except OSError:  # another process made it first
        shutil.rmtree(tmp, ignore_errors=True)
    return final
