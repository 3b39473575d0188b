"""Near-duplicate pairs across splits: found by two similarities, listed and counted (the duplicates stage).

- **pHash** (``data.phash``): at most ``data.near_duplicate_bits`` of 64 bits apart. Catches
  re-encodes, resizes, colour changes and crops up to about 3% per side; prepare already keeps
  such groups in one split where the split is petprobe's own, so across splits it finds what
  grouping could not move (an official test split) or was switched off.
- **Centred embedding cosine** (``centred_cosine``): the cosine of two images' backbone
  embeddings after subtracting the mean embedding of all the dataset's images (uncentred, every
  pooled ReLU embedding is positive and unrelated photos share much of their direction: median
  0.27, max 0.87 in the PetImages sample). At least ``data.near_duplicate_cosine`` (0.9) is a
  near-duplicate. Why 0.9, with efficientnet_lite0: the highest centred cosine between different
  photos of the workspace sample is 0.80 (PetImages, 2.0 million pairs) and 0.86 (Oxford-IIIT
  Pet, 105,000 pairs: two photos of one keeshond; two shots of one terrier in one garden: 0.85);
  of 40 PetImages photos, copies reach 0.9 in 95% of re-encodes at quality 30, 88% of crops of 5%
  per side, 100% of mirror images and 5-degree rotations, but only 17% of 10% crops. The cosine
  sees crops, mirrors and rotations that move the hash; a grey copy (cosine 0.6-0.8) only the hash.
  Dog/74 and Dog/180: 2 bits, cosine 0.983.

``cross_split_pairs`` lists every (test, train or val) and (val, train) pair that either measure
calls near; ``audit_summary`` counts them: ``test_twins``, how many test images have a near-twin in
train or val, and ``val_twins``, how many val images one in train.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from petprobe.data.phash import popcount

__all__ = ["centred_cosine", "AUDITED_SPLITS", "PAIR_COLUMNS", "cross_split_pairs", "audit_summary"]


def _centred_unit_rows(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64) - np.asarray(mean, dtype=np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)  # a row equal to the mean has cosine 0 with everything


def centred_cosine(a: np.ndarray, b: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of ``a`` with every row of ``b``, both minus ``mean`` (float64)."""
    return _centred_unit_rows(a, mean) @ _centred_unit_rows(b, mean).T


# Which pairs can leak: a test image with a twin in train or val, a val image with one in train.
AUDITED_SPLITS = (("test", ("train", "val")), ("val", ("train",)))
PAIR_COLUMNS = ["split", "path", "label", "twin_split", "twin_path", "twin_label", "phash_bits", "cosine", "found_by"]


def cross_split_pairs(manifest: pd.DataFrame, hashes: np.ndarray, X: np.ndarray, *, max_bits: int,
                      min_cosine: float, block: int = 256) -> pd.DataFrame:
    """Every pair across splits that the pHash (<= ``max_bits``) or the centred cosine (>= ``min_cosine``) calls near.

    ``manifest`` rows (path, label, split), ``hashes`` and embedding rows ``X`` are aligned. The
    cosine is centred on the mean embedding of all rows. One row per pair, the later split first
    (columns ``PAIR_COLUMNS``; ``found_by``: phash, cosine or both), sorted by split, path, twin path.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    # Centred and scaled in float64, multiplied in float32 (half the time; cosines are reported to
    # 4 decimals and float32 products are accurate to about 1e-6).
    unit = _centred_unit_rows(X, np.asarray(X, dtype=np.float64).mean(axis=0)).astype(np.float32)
    split = manifest.split.to_numpy()
    rows = []
    for this, others in AUDITED_SPLITS:
        a = np.flatnonzero(split == this)
        b = np.flatnonzero(np.isin(split, others))
        hashes_b, unit_b = hashes[None, b], unit[b].T
        for start in range(0, len(a), block):
            part = a[start:start + block]
            bits = popcount(hashes[part, None] ^ hashes_b)
            cosine = unit[part] @ unit_b
            by_hash, by_cosine = bits <= max_bits, cosine >= min_cosine
            for i, j in zip(*np.nonzero(by_hash | by_cosine)):
                found = "both" if by_hash[i, j] and by_cosine[i, j] else "phash" if by_hash[i, j] else "cosine"
                rows.append((part[i], b[j], int(bits[i, j]), round(float(cosine[i, j]), 4), found))
    frame = pd.DataFrame(
        [(split[i], manifest.path.iat[i], manifest.label.iat[i], split[j], manifest.path.iat[j],
          manifest.label.iat[j], bits, cosine, found) for i, j, bits, cosine, found in rows],
        columns=PAIR_COLUMNS)
    order = {name: k for k, (name, _) in enumerate(AUDITED_SPLITS)}
    frame = frame.sort_values(["split", "path", "twin_path"], key=lambda c: c.map(order) if c.name == "split" else c)
    return frame.reset_index(drop=True)


def audit_summary(manifest: pd.DataFrame, pairs: pd.DataFrame, *, max_bits: int, min_cosine: float) -> dict:
    """The counts of ``cross_split_pairs``: ``test_twins``, the test images with a near-twin in
    train or val; ``val_twins``, the val images with one in train; the pairs behind them, by measure
    and with another label than their twin's; and the thresholds."""
    def twinned(split: str) -> int:
        return int(pairs.path[pairs.split == split].nunique())

    n = manifest.split.value_counts()
    return {
        "n_test": int(n.get("test", 0)),
        "test_twins": twinned("test"),
        "n_val": int(n.get("val", 0)),
        "val_twins": twinned("val"),
        "pairs": int(len(pairs)),
        "pairs_by_phash": int(pairs.found_by.isin(("phash", "both")).sum()),
        "pairs_by_cosine": int(pairs.found_by.isin(("cosine", "both")).sum()),
        "pairs_with_other_label": int((pairs.label != pairs.twin_label).sum()),
        "phash_max_bits": int(max_bits),
        "min_cosine": float(min_cosine),
    }
