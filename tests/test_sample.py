"""The embedded mini-sample: real Oxford-IIIT Pet photos in the official layout, small, attributed,
read by the unchanged dataset readers, and chosen only explicitly (``data.source: sample``)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from petprobe.data.datasets import get_dataset
from petprobe.data.sample import SAMPLE_DIR, SAMPLE_LAYOUTS, write_sample
from petprobe.data.sources import choose_source
from petprobe.errors import PetprobeError
from petprobe.probing.measures import read_trimap
from stages import download, prepare

pytestmark = pytest.mark.unit

PETS = SAMPLE_DIR / "oxford-iiit-pet"


def official_entries(name: str) -> list[list[str]]:
    """Rows of an official list file: ``Image CLASS-ID SPECIES BREED-ID``; header lines start with '#'."""
    return [line.split() for line in (PETS / "annotations" / name).read_text().splitlines() if not line.startswith("#")]


def test_the_sample_is_small_attributed_and_downscaled():
    files = [p for p in SAMPLE_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 5_000_000  # a few MB at most
    licence = (SAMPLE_DIR / "LICENSE.md").read_text()
    assert "CC BY-SA 4.0" in licence and "Parkhi" in licence and "downscaled" in licence
    for path in (PETS / "images").iterdir():
        with Image.open(path) as photo:
            assert photo.format == "JPEG" and photo.mode == "RGB" and min(photo.size) <= 256, path


def test_pets_reader_sees_37_breeds_every_photo_listed_and_enough_to_split():
    candidates, classes = get_dataset("pets").list_candidates(PETS)
    assert len(classes) == 37 and all(c.problem is None for c in candidates)
    trainval = Counter(c.label for c in candidates if c.official_split == "trainval")
    assert set(trainval) == set(classes) and min(trainval.values()) >= 4  # >= 1 val and >= 3 train per breed
    test = Counter(c.label for c in candidates if c.official_split == "test")
    # The render pairs' and classes' breeds (params.yaml) have test images to attack.
    assert set(test) == {"Abyssinian", "Bengal", "Siamese", "american_bulldog", "havanese", "yorkshire_terrier"}
    # The official lists agree with each other: list.txt is trainval + test, CLASS-ID order kept.
    assert sorted(map(tuple, official_entries("list.txt"))) == sorted(
        map(tuple, official_entries("trainval.txt") + official_entries("test.txt")))


def test_trimaps_match_their_photos_and_cover_every_test_photo_of_their_breeds():
    trimaps = sorted((PETS / "annotations" / "trimaps").glob("*.png"))
    breeds = {p.stem.rsplit("_", 1)[0] for p in trimaps}
    assert breeds == {"Abyssinian", "Bengal", "american_bulldog"}
    for path in trimaps:
        with Image.open(PETS / "images" / f"{path.stem}.jpg") as photo:
            trimap = read_trimap(path, photo.size)  # same size, values in {1, 2, 3}
        # A pet in the middle ground, as the official trimaps draw it: pet, background and border present.
        assert set(np.unique(trimap)) == {1, 2, 3}, path
    test = {row[0] for row in official_entries("test.txt") if row[0].rsplit("_", 1)[0] in breeds}
    assert test <= {p.stem for p in trimaps}


def test_cats_and_dogs_view_is_the_same_photos_labelled_by_the_official_species(tmp_path):
    write_sample("PetImages", tmp_path / "PetImages")
    candidates, classes = get_dataset("catsdogs").list_candidates(tmp_path)
    assert classes == ["Cat", "Dog"] and all(c.problem is None for c in candidates)
    # The official list's own rule (its header): a capital first letter is a cat.
    species = {row[0]: "Cat" if row[0][0].isupper() else "Dog" for row in official_entries("list.txt")}
    assert Counter(c.label for c in candidates) == Counter(species.values())
    by_bytes = {(PETS / "images" / f"{stem}.jpg").read_bytes(): stem for stem in species}
    seen = set()
    for c in candidates:
        stem = by_bytes[(tmp_path / c.path).read_bytes()]  # byte for byte one of the pets photos
        assert species[stem] == c.label and stem not in seen
        seen.add(stem)
    # Numbered as the Microsoft archive numbers its files, from 1, without gaps.
    for label in classes:
        numbers = sorted(int(p.stem) for p in (tmp_path / "PetImages" / label).iterdir())
        assert numbers == list(range(1, len(numbers) + 1))


def test_sample_is_chosen_only_explicitly(tmp_path):
    nowhere = tmp_path / "no-mirror"
    for name in ("pets", "catsdogs"):
        spec = get_dataset(name)
        assert spec.mirror_dir in SAMPLE_LAYOUTS
        assert choose_source(spec, "auto", nowhere) == "official"  # never a silent fall-back to the sample
        assert choose_source(spec, "sample", nowhere) == "sample"
    folder = tmp_path / "photos"
    folder.mkdir()
    spec = get_dataset("mine", {"mine": str(folder)})
    assert choose_source(spec, "sample", nowhere) == "folder"  # an image folder is always itself


def test_download_and_prepare_run_on_the_sample_offline(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text("datasets: [pets, catsdogs]\ndata: {source: sample, mirror: /nonexistent}\n")
    monkeypatch.chdir(tmp_path)
    for name, n_classes in (("pets", 37), ("catsdogs", 2)):
        download.main(name)
        record = json.loads(next((tmp_path / "data/raw" / name).rglob("SOURCE.json")).read_text())
        assert record["source"] == "sample" and "CC BY-SA 4.0" in record["location"]
        prepare.main(name)
        classes = json.loads((tmp_path / "data/prepared" / name / "classes.json").read_text())
        assert len(classes) == n_classes
        rejected = (tmp_path / "data/prepared" / name / "rejected.csv").read_text().splitlines()
        assert rejected[1:] == []  # every sample photo is usable


def test_packaging_ships_every_sample_file():
    # pip install (editable or not) takes package data from this pattern; every sample file must match it.
    # (The line is read as text: tomllib is Python >= 3.11, petprobe supports 3.10.)
    line = re.search(r'^"petprobe\.data" = (\[.*\])$', (REPO / "pyproject.toml").read_text(), re.M)
    package_dir = REPO / "petprobe" / "data"
    shipped = {p for pattern in json.loads(line.group(1)) for p in package_dir.glob(pattern) if p.is_file()}
    assert shipped == {p for p in SAMPLE_DIR.rglob("*") if p.is_file()}


def test_a_dataset_the_sample_lacks_is_one_clear_line():
    from petprobe.data.datasets import DatasetSpec
    spec = DatasetSpec(name="flowers", title="flowers", archives=(), mirror_dir="flowers", raw_subdir="",
                       list_candidates=lambda raw: ([], []))
    with pytest.raises(PetprobeError, match="the embedded sample has no 'flowers' dataset"):
        choose_source(spec, "sample", Path("/nonexistent"))
