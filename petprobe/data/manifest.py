"""From a raw dataset to a manifest: every file checked, unusable ones listed with a reason, the rest split.

``check_candidates`` fully decodes every candidate image (``data.images.inspect_image``) and
keeps the reason for each file it rejects; ``build_manifest`` caps the usable ones, hashes them
(``data.phash``: near-duplicates can be kept in one split) and splits them (``data.datasets``)
into the rows of manifest.csv.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from petprobe.artefacts import SPLITS
from petprobe.data.datasets import assign_splits, cap_per_class
from petprobe.data.filenames import printable_name
from petprobe.data.images import inspect_image
from petprobe.data.phash import file_phash, join_near_duplicates, phash_hex
from petprobe.progress import progress

__all__ = ["check_candidates", "build_manifest", "minimum_data_problem"]


def check_candidates(raw: Path, candidates) -> tuple[list, list[dict]]:
    """Split candidates into usable ones and rejected rows ``{path, reason}``.

    The image check runs first, so a broken file is reported as broken even when the layout
    would also have excluded it.
    """
    usable, rejected = [], []
    for cand in progress(candidates, desc="check images", unit="img"):
        path = raw / cand.path
        reason = inspect_image(path) if path.exists() or path.is_symlink() else "file missing"
        reason = reason or cand.problem or _name_problem(cand.path)
        if reason:
            rejected.append({"path": printable_name(path.as_posix()), "reason": reason})
        else:
            usable.append(cand)
    return usable, rejected


def minimum_data_problem(manifest: pd.DataFrame, classes: list[str], *, official_test: bool) -> str | None:
    """Why the usable images are too few to train and evaluate on, or None.

    At least two classes, and every class needs a train image (to be learned) and a val image
    (the heads pick C / stop early on val); without an official test split every class needs a
    test image too. An official split may leave a class out of test (the Oxford-IIIT Pet sample
    does), but the test split as a whole must not be empty.
    """
    if len(classes) < 2:
        return f"{len(classes)} class ({', '.join(classes) or 'none'}); a classifier needs at least 2 class folders"
    needed = ("train", "val") if official_test else SPLITS
    counts = manifest.groupby(["label", "split"]).size()
    for label in classes:
        n = {split: int(counts.get((label, split), 0)) for split in SPLITS}
        if missing := [split for split in needed if n[split] == 0]:
            return (f"class '{label}' has {sum(n.values())} usable image(s) (train {n['train']}, val {n['val']}, "
                    f"test {n['test']}): none in {' and '.join(missing)}; every class needs at least one usable "
                    f"image in each of {', '.join(needed)}")
    if not (manifest.split == "test").any():
        return "the test split is empty"
    return None


def _name_problem(name: str) -> str | None:
    # A file name in a legacy encoding (e.g. Latin-1 from an old zip) cannot go into the UTF-8 CSVs.
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8; rename the file"
    return None


def build_manifest(raw: Path, usable, *, val_fraction, test_fraction, seed, max_per_class,
                   group_near_duplicates: bool = True, near_duplicate_bits: int = 8) -> pd.DataFrame:
    """The rows of manifest.csv: path, label, split and phash (``data.phash.phash_hex``).

    Capped to ``max_per_class`` per class, then split (stratified, seeded). Files named as variants
    of one photo (``Candidate.group``) always share a split; with ``group_near_duplicates`` so do
    images whose perceptual hashes are at most ``near_duplicate_bits`` apart, except that an
    official test split is never changed (Oxford-IIIT Pet: only the val carve-out is grouped).
    """
    paths = [(raw / c.path).as_posix() for c in usable]
    labels = [c.label for c in usable]
    official = [c.official_split for c in usable]
    groups = [c.group for c in usable]
    keep = cap_per_class(paths, labels, [o or "all" for o in official], max_per_class, seed)
    paths, labels, official, groups = ([v for v, k in zip(col, keep) if k] for col in (paths, labels, official, groups))
    hashes = [file_phash(path) for path in progress(paths, desc="hash images", unit="img")]
    if group_near_duplicates:
        groups = join_near_duplicates(paths, groups, hashes, [o == "test" for o in official],
                                      max_bits=near_duplicate_bits)
    splits = assign_splits(paths, labels, official, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                           groups=groups)
    return pd.DataFrame({"path": paths, "label": labels, "split": splits, "phash": [phash_hex(h) for h in hashes]})
