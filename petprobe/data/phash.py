"""Perceptual hashes of images, and the near-duplicate groups prepare keeps in one split.

A photo that sits in train and again (re-encoded, resized, lightly cropped) in val or test lets a
model score on memory instead of on what it learned; the PetImages sample holds such a pair
(Dog/74.jpg and Dog/180.jpg are one photo, saved twice). ``phash`` is the DCT perceptual hash as
the ``imagehash`` package and hackerfactor.com's "Looks like it" compute it: the image in grey at
32x32 px, its 2-D DCT-II, the 8x8 lowest frequencies, one bit per coefficient (above their median
or not). Two images whose 64-bit hashes differ in at most ``data.near_duplicate_bits`` bits (8)
are near-duplicates.

Why 8: measured on 100 PetImages photos, a re-encode at JPEG quality 30, a resize to 1/2 or 2x,
+15% brightness or a grey copy move the hash by at most 6 bits; a crop of 3% per side by 6 (median;
95th percentile 10); 5% per side by 10 (mostly missed). Of the 3.0 million pairs of different photos
in the workspace sample (PetImages and Oxford-IIIT Pet), none is 9 bits or closer (2 at 10, 13 at
12). Larger crops, mirror images and rotations are left to the centred embedding cosine of the
duplicates stage (``data.duplicates``), which can only run after embed.

The hash needs no model, so prepare hashes every image it keeps (a JPEG decoded at 1/8 scale, all a
32x32 hash needs) and, with ``data.group_near_duplicates``, keeps each group in one split
(``join_near_duplicates``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from petprobe.data.images import load_rgb

__all__ = ["PHASH_BITS", "phash", "file_phash", "phash_hex", "popcount", "hash_pairs", "join_near_duplicates"]

_SIDE = 32  # the grey image whose DCT is taken
_LOW = 8    # its lowest _LOW x _LOW frequencies make the hash
PHASH_BITS = _LOW * _LOW

# Rows 0.._LOW-1 of the (unnormalised) DCT-II basis: X[k] = sum_n x[n] cos(pi k (2n + 1) / 2N).
# scipy's type-2 DCT is twice this; a common factor leaves every comparison with the median as is.
_DCT = np.cos(np.pi * np.arange(_LOW)[:, None] * (2 * np.arange(_SIDE)[None, :] + 1) / (2 * _SIDE))


def phash(image: Image.Image) -> int:
    """The 64-bit DCT perceptual hash of ``image``, first bit = lowest frequency (imagehash's order)."""
    grey = image.convert("L").resize((_SIDE, _SIDE), Image.Resampling.LANCZOS)
    low = _DCT @ np.asarray(grey, dtype=np.float64) @ _DCT.T
    # Rounded so that float noise of another BLAS cannot flip a bit where coefficients tie with the
    # median (a flat image: all 63 of them are 0); real coefficients differ by far more than 1e-6.
    low = np.round(low, 6)
    bits = (low > np.median(low)).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def file_phash(path: str | Path) -> int:
    """``phash`` of an image file, upright (EXIF orientation applied) as every other stage sees it.

    A JPEG is decoded at the smallest scale libjpeg offers that keeps both sides >= 32 px (1/8 for
    photos), all the hash needs: about 0.6x the time of a full decode (the entropy decoding stays).
    Only for files prepare's image check has accepted.
    """
    try:
        with Image.open(path) as im:
            im.draft("RGB", (_SIDE, _SIDE))  # a no-op for other formats
            return phash(ImageOps.exif_transpose(im))
    except ValueError:  # a mode PIL cannot turn into grey directly: via petprobe's own RGB conversion
        return phash(load_rgb(path))


def phash_hex(value: int) -> str:
    """The hash as 16 hex digits, as manifest.csv holds it (and ``str(imagehash.phash(...))`` prints it)."""
    return f"{value:0{PHASH_BITS // 4}x}"


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64: the Hamming distance of two hashes is ``popcount(a ^ b)``."""
    return np.bitwise_count(np.asarray(x, dtype=np.uint64))


def hash_pairs(a: np.ndarray, b: np.ndarray | None = None, *, max_bits: int,
               block: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i, j, bits)`` of every pair of hashes ``a[i]``, ``b[j]`` at most ``max_bits`` apart.

    Without ``b``, the pairs ``i < j`` within ``a``. Compared in blocks of ``block`` rows, so memory
    stays at ``block x len(b)`` distances; the result is sorted by (i, j).
    """
    a = np.asarray(a, dtype=np.uint64)
    within = b is None
    b = a if within else np.asarray(b, dtype=np.uint64)
    found = []
    for start in range(0, len(a), block):
        bits = popcount(a[start:start + block, None] ^ b[None, :])
        near = bits <= max_bits
        if within:
            near &= np.arange(start, start + len(bits))[:, None] < np.arange(len(b))[None, :]
        i, j = np.nonzero(near)
        found.append((i + start, j, bits[i, j]))
    if not found:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return tuple(np.concatenate(col).astype(np.int64) for col in zip(*found))


def join_near_duplicates(paths: Sequence[str], groups: Sequence[str | None], hashes: Sequence[int],
                         fixed: Sequence[bool], *, max_bits: int) -> list[str | None]:
    """Every item's group key once near-duplicates are joined.

    Items that share a key in ``groups`` and items whose hashes are at most ``max_bits`` apart end
    up in one group, transitively; a joined group is keyed by its first path. ``fixed`` items (an
    official test split, which no grouping may move) join nothing. An item that joins nothing keeps
    its key, so with no near-duplicates the result equals ``groups``.
    """
    parent = list(range(len(paths)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(i: int, j: int) -> None:
        ri, rj = root(i), root(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)

    free = [i for i, f in enumerate(fixed) if not f]
    first_of: dict[str, int] = {}
    for i in free:
        if groups[i] is not None:
            join(i, first_of.setdefault(groups[i], i))
    i, j, _ = hash_pairs(np.array([hashes[k] for k in free], dtype=np.uint64), max_bits=max_bits)
    for a, b in zip(i.tolist(), j.tolist()):
        join(free[a], free[b])
    members: dict[int, list[int]] = {}
    for k in free:
        members.setdefault(root(k), []).append(k)
    keys = list(groups)
    for block in members.values():
        if len(block) > 1:
            key = min(paths[k] for k in block)
            for k in block:
                keys[k] = key
    return keys
