"""What the near-duplicate check costs: prepare's hashing against its image check, and the audit.

On the workspace sample (``../shared/datasets``), in this one process, alternating rounds so that a
machine shared with other work slows both alike, per dataset:

- ``check``: ``inspect_image`` of every candidate (prepare's full decode, what it did before);
- ``hash``: ``file_phash`` of every usable image (what the check adds: a JPEG decoded at 1/8 scale);
- ``group``: ``join_near_duplicates`` over those hashes (the all-pairs Hamming search);

and once, at the size of the full PetImages archive (25,000 images, 5,000 test, 4,000 val), on
random hashes and random 1280-d features: the all-pairs hash search of prepare and the duplicates
stage's ``cross_split_pairs`` (hash and centred cosine of every audited pair).

    python benchmarks/near_duplicates.py --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from petprobe.data.datasets import get_dataset  # noqa: E402
from petprobe.data.duplicates import cross_split_pairs  # noqa: E402
from petprobe.data.images import inspect_image  # noqa: E402
from petprobe.data.phash import file_phash, join_near_duplicates  # noqa: E402

SAMPLE = REPO.parent / "shared" / "datasets"
RAW = {"pets": SAMPLE / "oxford-iiit-pet", "catsdogs": SAMPLE}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def sample_rounds(ds: str, rounds: int) -> None:
    raw = RAW[ds]
    candidates, _ = get_dataset(ds).list_candidates(raw)
    paths = [raw / c.path for c in candidates if c.problem is None]
    usable = [p for p in paths if inspect_image(p) is None]
    hashes = [file_phash(p) for p in usable]
    times = {"check": [], "hash": [], "group": []}
    for _ in range(rounds):
        times["check"].append(timed(lambda: [inspect_image(p) for p in paths]))
        times["hash"].append(timed(lambda: [file_phash(p) for p in usable]))
        times["group"].append(timed(lambda: join_near_duplicates([str(p) for p in usable], [None] * len(usable),
                                                                 hashes, [False] * len(usable), max_bits=8)))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{ds}: {len(paths)} files checked in {med['check']:.2f} s ({len(paths) / med['check']:.0f}/s); "
          f"{len(usable)} hashed in {med['hash']:.2f} s ({len(usable) / med['hash']:.0f}/s), grouped in "
          f"{med['group']:.3f} s: +{(med['hash'] + med['group']) / med['check']:.0%} of the check "
          f"(medians of {rounds} rounds)")


def full_size() -> None:
    rng = np.random.default_rng(0)
    n, n_test, n_val, dim = 25_000, 5_000, 4_000, 1280
    hashes = rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2)
    seconds = timed(lambda: join_near_duplicates([f"{i:05d}" for i in range(n)], [None] * n, hashes.tolist(),
                                                 [False] * n, max_bits=8))
    print(f"full-size PetImages ({n:,} images): all-pairs hash search {seconds:.1f} s")
    manifest = pd.DataFrame({"path": [f"{i:05d}" for i in range(n)], "label": "x",
                             "split": ["test"] * n_test + ["val"] * n_val + ["train"] * (n - n_test - n_val)})
    X = np.abs(rng.normal(size=(n, dim))).astype(np.float32)
    seconds = timed(lambda: cross_split_pairs(manifest, hashes, X, max_bits=8, min_cosine=0.9))
    print(f"full-size PetImages: duplicates stage's pair search (test x train+val, val x train; hash and "
          f"{dim}-d centred cosine) {seconds:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-full-size", action="store_true")
    args = parser.parse_args()
    if not SAMPLE.is_dir():
        sys.exit(f"the workspace sample is missing: expected {SAMPLE}")
    for ds in ("catsdogs", "pets"):
        sample_rounds(ds, args.rounds)
    if not args.skip_full_size:
        full_size()


if __name__ == "__main__":
    main()
