"""Copying a local mirror folder into the raw data, byte for byte, never through a link."""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path

from petprobe.checksums import CHUNK
from petprobe.data.filenames import is_utf8, printable_name
from petprobe.errors import PetprobeError
from petprobe.progress import progress as progress_bar

__all__ = ["copy_tree"]


def copy_tree(src: Path, dst: Path) -> tuple[int, list[dict]]:
    """Copy every regular file under ``src`` into ``dst`` byte for byte; return the count and what was skipped.

    Skipped, each as ``{"path": relative path, "reason": ...}`` (names shown with undecodable
    bytes as ``\\xNN``): symbolic links (never followed, so a link cannot pull a file from outside
    the folder, or loop), FIFOs, sockets and devices (reading a FIFO would wait forever), and
    names that are not valid UTF-8 (they would break DVC's UTF-8 records of the outputs).
    A folder that cannot be listed is an error, not a silent gap in the copy.

    The listing only decides what to try: each file is then opened beneath ``src`` one path
    component at a time with no link followed, checked on the open descriptor and copied from it
    (``_open_beneath``), so a file or folder swapped for a link (or a FIFO) after it was listed is
    skipped like one, never copied through (a swap during a copy once left a link to an outside
    file in data/raw).
    """
    def unreadable(err: OSError):
        raise PetprobeError(f"cannot read folder {err.filename}: {err.strerror or err}")

    files, skipped = [], []

    def skip(path: Path, reason: str) -> None:
        skipped.append({"path": printable_name(path.relative_to(src).as_posix()), "reason": reason})

    for folder, dirs, names in os.walk(src, onerror=unreadable, followlinks=False):
        for name in sorted(dirs):
            path = Path(folder, name)
            if path.is_symlink():
                skip(path, "symbolic link to a folder (not followed)")
            elif not is_utf8(name):
                skip(path, "folder name is not valid UTF-8; rename it (its files were not copied)")
                dirs.remove(name)
        dirs.sort()
        for name in sorted(names):
            path = Path(folder, name)
            kind = os.lstat(path).st_mode
            if stat.S_ISLNK(kind):
                skip(path, "symbolic link (not followed)")
            elif not stat.S_ISREG(kind):
                skip(path, "not a regular file (FIFO, socket or device)")
            elif not is_utf8(name):
                skip(path, "file name is not valid UTF-8; rename the file")
            else:
                files.append(path)
    n = 0
    for path in progress_bar(sorted(files), desc=f"copy {src.name}", unit="file", leave=False):
        out = dst / path.relative_to(src)
        try:
            source = _open_beneath(src, path.relative_to(src).parts)
        except OSError as err:
            if err.errno in (errno.ELOOP, errno.ENOTDIR):  # a component became a link after the listing
                skip(path, "symbolic link (not followed)")
                continue
            raise PetprobeError(f"cannot copy {path}: {err.strerror or err}") from None
        with source:
            if not stat.S_ISREG(os.fstat(source.fileno()).st_mode):  # became a FIFO, socket or device
                skip(path, "not a regular file (FIFO, socket or device)")
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                with open(out, "wb") as sink:
                    shutil.copyfileobj(source, sink, CHUNK)
            except OSError as err:
                raise PetprobeError(f"cannot copy {path}: {err.strerror or err}") from None
        n += 1
    return n, sorted(skipped, key=lambda row: row["path"])


def _open_beneath(root: Path, parts: tuple[str, ...]):
    """The file ``root/<parts>`` opened for reading, following no link at any component (ELOOP or
    ENOTDIR where one is a link) and without blocking on a FIFO."""
    nofollow, cloexec = getattr(os, "O_NOFOLLOW", 0), getattr(os, "O_CLOEXEC", 0)
    fd = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | cloexec)
    try:
        for part in parts[:-1]:
            inner = os.open(part, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | nofollow | cloexec, dir_fd=fd)
            os.close(fd)
            fd = inner
        file_fd = os.open(parts[-1], os.O_RDONLY | os.O_NONBLOCK | nofollow | cloexec, dir_fd=fd)
    finally:
        os.close(fd)
    os.set_blocking(file_fd, True)
    return os.fdopen(file_fd, "rb")
