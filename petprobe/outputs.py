"""Atomic writes: every out appears whole under its final name or not at all.

A stage killed half-way (Ctrl-C, OOM, SIGKILL) leaves at most a ``.tmp-<name>.<pid>.*`` sibling
that no later stage reads. The next write of the same out removes such siblings once the process
that made them is gone (Ctrl-C removes its own at once), so killed runs do not pile up copies.

Replacing is destructive (the old folder is removed), so both writers refuse to replace a path
that is not inside the repository's ``data/`` or ``metrics/`` (``OUTPUT_ROOTS`` under the working
directory, which is the repository root for stages, DVC and ``petprobe predict``). Dataset names
are validated in ``petprobe.params``; this is the second line of defence should a path ever be
built from an unchecked name (``data/raw`` / ``"/home/me/photos"`` is ``/home/me/photos``).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from pathlib import Path

from petprobe.errors import PetprobeError

__all__ = ["OUTPUT_ROOTS", "check_replaceable", "atomic_path", "atomic_dir", "remove_stale_temps", "write_json", "write_text", "write_csv", "save_npy", "save_npz",
           "NpyRowWriter"]


# The repository folders whose contents an atomic write may replace (relative to the working directory).
OUTPUT_ROOTS = ("data", "metrics")


def check_replaceable(path: str | Path) -> Path:
    """``path`` made absolute with ``..`` folded; raise unless it is new or lies strictly inside
    ``./data/`` or ``./metrics/``.

    The writers then use the returned path, so what is checked is what is written. The check is
    lexical (symlinks not resolved): a ``data/`` that is itself a link to a bigger disk still works.
    """
    target, cwd = os.path.abspath(path), os.path.abspath(os.getcwd())
    if not os.path.lexists(target):
        return Path(target)  # creating a new file or folder removes nothing
    for name in OUTPUT_ROOTS:
        root = os.path.join(cwd, name)
        if target != root and os.path.commonpath([target, root]) == root:
            return Path(target)
    raise PetprobeError(f"refusing to replace {target}: petprobe only replaces outputs inside "
                        f"{os.path.join(cwd, OUTPUT_ROOTS[0])}/ or {os.path.join(cwd, OUTPUT_ROOTS[1])}/")


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path in the target's folder; rename it to ``path`` if the block succeeds."""
    path = check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(".tmp-", path), dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        _fsync(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outs should look like any other file
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path):
    """Yield an empty temporary folder; on success it replaces ``path`` (old contents removed)."""
    path = check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(".tmp-", path), dir=path.parent))
    try:
        yield tmp
        # mkdtemp makes 0700, and a writer may have copied another temporary folder's mode onto it
        # (shutil.copytree does): set the mode when publishing, so outs look like any other folder.
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            # Two renames keep a whole folder under the name at every moment but one.
            old = Path(tempfile.mkdtemp(prefix=_temp_prefix(".old-", path), dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _temp_prefix(kind: str, path: Path) -> str:
    # The pid in the name tells a later run whether the writer is still alive.
    return f"{kind}{path.name}.{os.getpid()}."


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Remove the temp siblings of ``path`` left by writers that no longer run; return them."""
    path = Path(path)
    removed = []
    for kind in (".tmp-", ".old-"):
        prefix = f"{kind}{path.name}."
        for sibling in path.parent.glob(glob.escape(prefix) + "*"):
            rest = sibling.name[len(prefix):].split(".")  # <pid>.<random>, nothing else
            if len(rest) != 2 or not rest[0].isdigit():
                continue  # another out's temp (e.g. of "pets.v2"), or not ours at all
            pid = int(rest[0])
            if pid == os.getpid() or _process_alive(pid):
                continue  # a live writer's (or this process's own) work in progress
            if sibling.is_dir() and not sibling.is_symlink():
                shutil.rmtree(sibling, ignore_errors=True)
            else:
                sibling.unlink(missing_ok=True)
            removed.append(sibling)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_csv(path: str | Path, frame) -> None:
    """Write a pandas DataFrame without its index."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")


def save_npy(path: str | Path, array) -> None:
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)


def save_npz(path: str | Path, **arrays) -> None:
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


class NpyRowWriter:
    """Write a 2-D ``.npy`` file block by block, in row order, without holding it in memory.

    The header (final shape) is written first, then each ``append``ed block goes straight to the
    file. Unlike a writable ``np.memmap``, whose touched pages count in the process's resident
    memory until it is closed, this keeps peak RSS independent of the number of rows. Closing
    with fewer or more rows than the shape promised raises, so a short file is never left looking
    whole (use it inside ``atomic_dir``/``atomic_path``).
    """

    def __init__(self, path: str | Path, shape: tuple[int, int], dtype="<f4"):
        import numpy as np

        self.path, self.shape, self.dtype = Path(path), tuple(shape), np.dtype(dtype)
        self.rows = 0
        self._fh = open(self.path, "wb")
        np.lib.format.write_array_header_1_0(self._fh, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                        "fortran_order": False, "shape": self.shape})

    def append(self, block) -> None:
        import numpy as np

        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.ndim != 2 or block.shape[1] != self.shape[1] or self.rows + len(block) > self.shape[0]:
            raise ValueError(f"block {block.shape} does not fit {self.path.name} {self.shape} at row {self.rows}")
        self._fh.write(block.data)
        self.rows += len(block)

    def close(self) -> None:
        self._fh.close()
        if self.rows != self.shape[0]:
            raise ValueError(f"{self.path.name}: {self.rows} rows written, {self.shape[0]} expected")

    def __enter__(self) -> NpyRowWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._fh.close()  # the caller's error wins; the partial file dies with its atomic folder
