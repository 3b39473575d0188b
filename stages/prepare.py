"""prepare@<ds>: check every raw image, record what is unusable, split the rest.

Reads data.val_fraction, data.test_fraction, data.seed, data.max_per_class,
data.group_near_duplicates, data.near_duplicate_bits, imagefolders. Every file is opened and fully
decoded; raw files are never changed. Writes data/prepared/<ds>/manifest.csv (path,label,split,phash:
each image's perceptual hash, which keeps near-duplicates in one split and which the duplicates
stage audits), classes.json and rejected.csv (path,reason).
"""

from __future__ import annotations

import sys
from collections import Counter

from petprobe.artefacts import Artefacts
from petprobe.data.datasets import get_dataset
from petprobe.data.manifest import build_manifest, check_candidates, minimum_data_problem
from petprobe.errors import PetprobeError, run_stage
from petprobe.params import load_params


def main(ds: str) -> None:
    params = load_params(dataset=ds)
    data = params.data
    artefacts = Artefacts(ds)
    spec = get_dataset(ds, params.imagefolders)
    raw = artefacts.require_raw()

    try:
        candidates, classes = spec.list_candidates(raw)
    except FileNotFoundError as err:
        raise PetprobeError(str(err)) from None
    usable, rejected = check_candidates(raw, candidates)
    # Files download left out (links, FIFOs, names that are not UTF-8) are listed with the rest.
    rejected += [{"path": (raw / row["path"]).as_posix(), "reason": row["reason"]} for row in artefacts.read_skipped()]
    manifest = build_manifest(raw, usable, val_fraction=data.val_fraction, test_fraction=data.test_fraction,
                              seed=data.seed, max_per_class=data.max_per_class,
                              group_near_duplicates=data.group_near_duplicates,
                              near_duplicate_bits=data.near_duplicate_bits)
    empty = [c for c in classes if c not in set(manifest.label)]
    if empty:
        raise PetprobeError(f"{ds}: no usable images for class(es) {', '.join(empty)}")
    if (problem := minimum_data_problem(manifest, classes, official_test=spec.official_test)) is not None:
        raise PetprobeError(f"{ds}: too little data to train and evaluate on: {problem}")

    artefacts.write_prepared(manifest, classes, rejected)
    counts = Counter(manifest.split)
    print(f"prepare@{ds}: {len(classes)} classes, train {counts['train']}, val {counts['val']}, "
          f"test {counts['test']}, rejected {len(rejected)}", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
