"""prepare: every file checked, broken ones rejected with a reason, deterministic stratified splits."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from conftest import PETIMAGES, PETS, WORKSPACE_PETIMAGES
from petprobe.data.datasets import assign_splits, get_dataset, imagefolder_spec
from petprobe.data.manifest import build_manifest, check_candidates

pytestmark = pytest.mark.unit


@pytest.fixture()
def messy_folder(tmp_path) -> Path:
    """A folder dataset with the kinds of files the real PetImages archive contains."""
    root = tmp_path / "raw"
    cat, dog = root / "Cat", root / "Dog"
    cat.mkdir(parents=True)
    dog.mkdir()
    good = PETIMAGES / "Cat" / "1.jpg"
    shutil.copy(good, cat / "good.jpg")
    (cat / "empty.jpg").write_bytes(b"")
    data = (PETIMAGES / "Dog" / "1.jpg").read_bytes()
    (dog / "truncated.jpg").write_bytes(data[: len(data) * 2 // 5])
    (cat / "Thumbs.db").write_bytes(bytes(range(256)) * 8)
    with Image.open(good) as im:
        im.save(cat / "png_named.jpg", format="PNG")
        im.convert("P").save(dog / "gif_named.jpg", format="GIF")
        im.convert("CMYK").save(cat / "cmyk.jpg", format="JPEG")
        im.convert("L").save(dog / "gray.jpg", format="JPEG")
        im.save(dog / "bmp_named.jpg", format="BMP")
    return root


def test_broken_files_are_rejected_with_reasons_and_odd_ones_kept(messy_folder):
    before = {p: p.read_bytes() for p in messy_folder.rglob("*") if p.is_file()}
    candidates, classes = imagefolder_spec("messy", str(messy_folder)).list_candidates(messy_folder)
    usable, rejected = check_candidates(messy_folder, candidates)

    assert classes == ["Cat", "Dog"]
    reasons = {Path(r["path"]).name: r["reason"] for r in rejected}
    assert reasons == {
        "empty.jpg": "empty file (0 bytes)",
        "truncated.jpg": reasons["truncated.jpg"],
        "Thumbs.db": "not an image (unrecognised format)",
    }
    assert reasons["truncated.jpg"].startswith("corrupt or truncated image")
    assert sorted(Path(c.path).name for c in usable) == [
        "bmp_named.jpg", "cmyk.jpg", "gif_named.jpg", "good.jpg", "gray.jpg", "png_named.jpg"]
    # Raw files are never modified or deleted.
    assert {p: p.read_bytes() for p in messy_folder.rglob("*") if p.is_file()} == before


def test_pets_labels_and_official_test_split_come_from_the_annotations():
    candidates, classes = get_dataset("pets").list_candidates(PETS)
    assert len(classes) == 37 and classes[0] == "Abyssinian" and classes[-1] == "yorkshire_terrier"
    listed_test = {line.split()[0] for line in (PETS / "annotations/test.txt").read_text().splitlines()}
    official = {Path(c.path).stem: c.official_split for c in candidates if c.problem is None}
    assert {stem for stem, split in official.items() if split == "test"} == listed_test
    unlisted = {Path(c.path).name: c.problem for c in candidates if c.problem}
    assert unlisted["Abyssinian_34.jpg"] == "not in the official trainval/test lists"


def test_pets_splits_keep_official_test_and_stratify_val():
    candidates, classes = get_dataset("pets").list_candidates(PETS)
    usable = [c for c in candidates if c.problem is None]
    manifest = build_manifest(PETS, usable, val_fraction=0.2, test_fraction=0.2, seed=42, max_per_class=0)
    by_stem = {Path(p).stem: s for p, s in zip(manifest.path, manifest.split)}
    official = {Path(c.path).stem: c.official_split for c in usable}
    for stem, split in by_stem.items():
        assert (split == "test") == (official[stem] == "test")
    # Every breed has val images in proportion to its trainval count (10 -> 2, 20 -> 4, 21 -> 4).
    trainval = manifest[manifest.split != "test"]
    for label, group in trainval.groupby("label"):
        n_val = int((group.split == "val").sum())
        assert n_val == round(len(group) * 0.2), (label, n_val, len(group))
    assert set(manifest[manifest.split == "train"].label) == set(classes)


def test_splits_are_deterministic_and_depend_on_the_seed():
    paths = [f"img_{i:03d}.jpg" for i in range(200)]
    labels = ["cat" if i % 3 else "dog" for i in range(200)]
    official = [None] * 200
    a = assign_splits(paths, labels, official, val_fraction=0.2, test_fraction=0.2, seed=1)
    b = assign_splits(paths[::-1], labels[::-1], official, val_fraction=0.2, test_fraction=0.2, seed=1)
    c = assign_splits(paths, labels, official, val_fraction=0.2, test_fraction=0.2, seed=2)
    assert a == b[::-1]  # listing order does not matter
    assert a != c
    counts = Counter(zip(labels, a))
    assert counts[("dog", "test")] == round(67 * 0.2) and counts[("cat", "test")] == round(133 * 0.2)
    assert counts[("dog", "val")] + counts[("dog", "train")] + counts[("dog", "test")] == 67


def test_catsdogs_lists_every_file_with_its_folder_label():
    candidates, classes = get_dataset("catsdogs").list_candidates(PETIMAGES.parent)
    assert classes == ["Cat", "Dog"]
    on_disk = {label: len(os.listdir(PETIMAGES / label)) for label in classes}  # Thumbs.db and broken files too
    assert len(candidates) == sum(on_disk.values())
    assert Counter(c.label for c in candidates) == on_disk


@pytest.mark.workspace
def test_catsdogs_lists_every_file_of_the_workspace_sample():
    candidates, classes = get_dataset("catsdogs").list_candidates(WORKSPACE_PETIMAGES.parent)
    assert classes == ["Cat", "Dog"]
    assert len(candidates) == 2008
    assert Counter(c.label for c in candidates) == {"Cat": 1004, "Dog": 1004}


def test_variants_of_one_photo_stay_in_one_split_and_single_files_split_as_before(tmp_path):
    # The real PetImages names (<n>.jpg) plus near-duplicates <n>_<k>.jpg, as benchmarks/scale.py
    # writes them: a copy in train and another in val would let val loss fall with memorisation.
    cat = tmp_path / "PetImages" / "Cat"
    cat.mkdir(parents=True)
    (tmp_path / "PetImages" / "Dog").mkdir()
    real = sorted(PETIMAGES.glob("Cat/*.jpg"))[:60]
    for i, path in enumerate(real):
        shutil.copyfile(path, cat / path.name)
        for k in range(1, 1 + i % 4):
            shutil.copyfile(path, cat / f"{path.stem}_{k}.jpg")
    candidates, _ = get_dataset("catsdogs").list_candidates(tmp_path)
    paths, labels = [c.path for c in candidates], [c.label for c in candidates]
    groups = [c.group for c in candidates]
    splits = assign_splits(paths, labels, [None] * len(paths), val_fraction=0.2, test_fraction=0.2, seed=3,
                           groups=groups)
    by_photo: dict[str, set[str]] = {}
    for path, split in zip(paths, splits):
        by_photo.setdefault(Path(path).stem.split("_")[0], set()).add(split)
    assert len(by_photo) == 60 and all(len(s) == 1 for s in by_photo.values())
    assert {"train", "val", "test"} <= set(splits)
    assert abs(Counter(splits)["test"] - 0.2 * len(paths)) <= 4  # whole groups: close to the fraction

    # Without variants every file is its own group: exactly the per-file assignment.
    singles = [c for c in candidates if "_" not in Path(c.path).stem]
    args = ([c.path for c in singles], [c.label for c in singles], [None] * len(singles))
    assert [c.group for c in singles] == [f"PetImages/Cat/{Path(c.path).stem}" for c in singles]
    assert (assign_splits(*args, val_fraction=0.2, test_fraction=0.2, seed=3, groups=[c.group for c in singles])
            == assign_splits(*args, val_fraction=0.2, test_fraction=0.2, seed=3))
