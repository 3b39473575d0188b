"""File checksums: the one place petprobe hashes bytes, files and folders.

Downloads are checked against published md5/sha256 values, weights files against pinned sha256s,
head files against the sha256 recorded beside them, and raw dataset folders are summarised by one
digest in SOURCE.json. All of it reads files in 1 MiB chunks, so a large file never sits in memory.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

__all__ = ["CHUNK", "sha256_bytes", "file_sha256", "file_digests", "tree_digest", "image_list_sha256"]

CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_digests(path: str | Path) -> tuple[str, str, int]:
    """(md5, sha256, size in bytes) of one file, read once."""
    md5, sha = hashlib.md5(), hashlib.sha256()
    n = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            md5.update(chunk)
            sha.update(chunk)
            n += len(chunk)
    return md5.hexdigest(), sha.hexdigest(), n


@functools.cache
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, computed once per process for an unchanged file (weights are hashed often)."""
    stat = Path(path).stat()  # size and mtime in the key: a replaced file is hashed again
    return _cached_sha256(str(path), stat.st_size, stat.st_mtime_ns)


def tree_digest(root: str | Path) -> tuple[int, int, str]:
    """(files, bytes, sha256 over every relative path and file content) of a folder.

    Each file is hashed in ``CHUNK`` pieces, so memory stays flat however large a file is.
    Only regular files count; links are not followed (download never copies one).
    """
    root = Path(root)
    digest, files, size = hashlib.sha256(), 0, 0
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        content, n = hashlib.sha256(), 0
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                content.update(chunk)
                n += len(chunk)
        digest.update(os.fsencode(path.relative_to(root).as_posix()) + b"\0")  # any name, even not UTF-8
        digest.update(content.digest())
        files, size = files + 1, size + n
    return files, size, digest.hexdigest()


def image_list_sha256(paths, labels) -> str:
    """Hash of the ordered (path, label) list: identifies exactly which rows an array holds."""
    digest = hashlib.sha256()
    for path, label in zip(paths, labels):
        digest.update(f"{path}\t{label}\n".encode())
    return digest.hexdigest()
