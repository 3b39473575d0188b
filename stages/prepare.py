"""prepare@<ds>: check every raw image, record what is unusable, split the rest.

Reads data.val_fraction, data.test_fraction, data.seed, data.max_per_class (and imagefolders).
Every file is opened and fully decoded; raw files are never changed. Writes
data/prepared/<ds>/manifest.csv (path,label,split), classes.json and rejected.csv (path,reason).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from stages.datasets import assign_splits, cap_per_class, get_dataset
from stages.errors import PetprobeError, run_stage
from stages.images import inspect_image
from stages.outputs import atomic_dir, write_csv, write_json
from stages.params import load_params


def check_candidates(raw: Path, candidates) -> tuple[list, list[dict]]:
    """Split candidates into usable ones and rejected rows ``{path, reason}``.

    The image check runs first, so a broken file is reported as broken even when the layout
    would also have excluded it.
    """
    usable, rejected = [], []
    for cand in tqdm(candidates, desc="check images", unit="img"):
        path = raw / cand.path
        reason = inspect_image(path) if path.exists() or path.is_symlink() else "file missing"
        reason = reason or cand.problem or _name_problem(cand.path)
        if reason:
            rejected.append({"path": _printable(path.as_posix()), "reason": reason})
        else:
            usable.append(cand)
    return usable, rejected


def _name_problem(name: str) -> str | None:
    # A file name in a legacy encoding (e.g. Latin-1 from an old zip) cannot go into the UTF-8 CSVs.
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8; rename the file"
    return None


def _printable(name: str) -> str:
    """The name with undecodable bytes shown as \\xNN, so rejected.csv can always list it."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def build_manifest(raw: Path, usable, *, val_fraction, test_fraction, seed, max_per_class) -> pd.DataFrame:
    paths = [(raw / c.path).as_posix() for c in usable]
    labels = [c.label for c in usable]
    official = [c.official_split for c in usable]
    keep = cap_per_class(paths, labels, [o or "all" for o in official], max_per_class, seed)
    paths, labels, official = ([v for v, k in zip(col, keep) if k] for col in (paths, labels, official))
    splits = assign_splits(paths, labels, official, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    return pd.DataFrame({"path": paths, "label": labels, "split": splits})


def main(ds: str) -> None:
    params = load_params()
    params.check_dataset(ds)
    data = params.data
    spec = get_dataset(ds, params.imagefolders)
    raw = Path("data/raw") / ds
    if not raw.is_dir():
        raise PetprobeError(f"{raw} does not exist; run the download stage first (dvc repro download@{ds})")

    try:
        candidates, classes = spec.list_candidates(raw)
    except FileNotFoundError as err:
        raise PetprobeError(str(err)) from None
    usable, rejected = check_candidates(raw, candidates)
    manifest = build_manifest(raw, usable, val_fraction=data.val_fraction, test_fraction=data.test_fraction,
                              seed=data.seed, max_per_class=data.max_per_class)
    empty = [c for c in classes if c not in set(manifest.label)]
    if empty:
        raise PetprobeError(f"{ds}: no usable images for class(es) {', '.join(empty)}")

    with atomic_dir(Path("data/prepared") / ds) as tmp:
        write_csv(tmp / "manifest.csv", manifest)
        write_json(tmp / "classes.json", classes)
        write_csv(tmp / "rejected.csv", pd.DataFrame(rejected, columns=["path", "reason"]))
    counts = Counter(manifest.split)
    print(f"prepare@{ds}: {len(classes)} classes, train {counts['train']}, val {counts['val']}, "
          f"test {counts['test']}, rejected {len(rejected)}", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
