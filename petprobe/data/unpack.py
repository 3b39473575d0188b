"""Unpacking a downloaded tar or zip archive safely.

``extract`` checks every member of a tar or zip archive *before* writing anything: no absolute
paths, no ``..``, no links or device files, and a bound on the unpacked size (zip bombs).
Members are written by this code, not by the archive library, so nothing escapes the target, and
a damaged archive (truncated, bad CRC, sizes that lie) is an error that removes what was written.
"""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from petprobe.checksums import CHUNK
from petprobe.data.filenames import is_utf8, printable_name
from petprobe.errors import PetprobeError, one_line
from petprobe.progress import progress as progress_bar

__all__ = ["extract", "MAX_UNPACKED_BYTES"]

# The largest reference archive unpacks to under 1 GB; 32 GiB leaves room for real datasets
# while stopping an archive that claims (or inflates to) absurd sizes.
MAX_UNPACKED_BYTES = 32 * 2**30


def _safe_member_path(name: str, archive: Path) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise PetprobeError(f"{archive.name}: refusing member with an absolute path: {name!r}")
    if ".." in path.parts:
        raise PetprobeError(f"{archive.name}: refusing member that escapes the target: {name!r}")
    if "\0" in name:
        raise PetprobeError(f"{archive.name}: refusing member with a NUL byte in its name: {name!r}")
    if not path.parts or path.parts == (".",):
        raise PetprobeError(f"{archive.name}: refusing member with an empty name: {name!r}")
    return path


def _tar_members(archive: Path, tar: tarfile.TarFile):
    for member in tar.getmembers():
        path = _safe_member_path(member.name, archive)
        if member.issym() or member.islnk():
            raise PetprobeError(f"{archive.name}: refusing link member {member.name!r} -> {member.linkname!r}")
        if not (member.isfile() or member.isdir()):
            raise PetprobeError(f"{archive.name}: refusing special member {member.name!r} (device, fifo, ...)")
        yield path, member, member.isdir(), member.size


def _zip_members(archive: Path, zf: zipfile.ZipFile):
    for info in zf.infolist():
        path = _safe_member_path(info.filename, archive)
        kind = stat.S_IFMT(info.external_attr >> 16)
        if kind == stat.S_IFLNK:
            raise PetprobeError(f"{archive.name}: refusing link member {info.filename!r}")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise PetprobeError(f"{archive.name}: refusing special member {info.filename!r}")
        yield path, info, info.is_dir(), info.file_size


class _LocalProblem(PetprobeError):
    """An unpacking error on this machine's side: downloading again would not help."""


# What a damaged archive raises while it is listed or read (truncated gzip, bad CRC, ...).
_DAMAGED = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError)


def extract(archive: str | Path, target: str | Path, *, max_bytes: int = MAX_UNPACKED_BYTES,
            skipped: list[dict] | None = None) -> int:
    """Unpack a .tar(.gz) or .zip ``archive`` into ``target``; return the number of files written.

    All or nothing: on any error the files and folders this call created are removed again.
    Members whose name is not valid UTF-8 are left out (DVC records outputs in UTF-8) and
    appended to ``skipped`` as ``{path, reason}``.
    """
    archive, target = Path(archive), Path(target)
    if zipfile.is_zipfile(archive):
        opener, members, read = zipfile.ZipFile, _zip_members, lambda a, m: a.open(m)
    elif tarfile.is_tarfile(archive):
        opener, members, read = tarfile.open, _tar_members, lambda a, m: a.extractfile(m)
    else:
        raise PetprobeError(f"{archive} is neither a tar nor a zip archive; delete it and download it again")
    created: list[Path] = []
    try:
        with opener(archive) as handle:
            checked = list(members(archive, handle))
            declared = sum(size for *_, size in checked)
            if declared > max_bytes:
                raise PetprobeError(f"{archive.name}: unpacks to {declared:,} bytes, over the {max_bytes:,}-byte limit")
            return _write_members(archive, handle, checked, read, target, max_bytes, created,
                                  skipped if skipped is not None else [])
    except _LocalProblem:  # disk full, a file where a folder should be: not the archive's fault
        _remove(created)
        raise
    except PetprobeError as err:  # a member refused, or sizes over the limit
        _remove(created)
        raise PetprobeError(f"{err}; delete {archive} and download it again") from None
    except _DAMAGED as err:
        _remove(created)
        raise PetprobeError(f"{archive} is damaged or unreadable ({one_line(err)}); "
                            f"delete it and download again") from None
    except Exception as err:  # noqa: BLE001 - an encrypted member (RuntimeError), an unknown compression
        _remove(created)  # (NotImplementedError), a bad header field (ValueError): still a bad download
        raise PetprobeError(f"{archive} cannot be unpacked ({type(err).__name__}: {one_line(err)}); "
                            f"delete it and download again") from None
    except BaseException:  # Ctrl-C included: leave no half-unpacked tree behind
        _remove(created)
        raise


def _write_members(archive: Path, handle, checked, read, target: Path, max_bytes: int, created: list[Path],
                   skipped: list[dict]) -> int:
    written = files = 0
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    name_max, path_max = os.pathconf(target, "PC_NAME_MAX"), os.pathconf(target, "PC_PATH_MAX")
    for path, member, is_dir, _size in progress_bar(checked, desc=f"unpack {archive.name}", unit="file", leave=False):
        if not is_utf8(str(path)):  # a tar name in a legacy encoding: as copy_tree, left out and recorded
            skipped.append({"path": printable_name(path.as_posix()), "reason": "file name is not valid UTF-8"})
            continue
        if (any(len(os.fsencode(part)) > name_max for part in path.parts)
                or len(os.fsencode(root / path)) >= path_max):  # ENAMETOOLONG: this disk's limit, not damage
            skipped.append({"path": printable_name(path.as_posix()),
                            "reason": f"file name too long for this file system (over {name_max} bytes a name "
                                      f"or {path_max} a path)"})
            continue
        out = target.joinpath(*path.parts)
        if not out.resolve().is_relative_to(root):
            raise PetprobeError(f"{archive.name}: member {path} would land outside {target}")
        for parent in reversed([out, *out.parents] if is_dir else out.parents):
            if parent.is_relative_to(target) and parent != target and not parent.exists():
                parent.mkdir()
                created.append(parent)
        if is_dir:
            continue
        if out.exists():
            raise PetprobeError(f"{archive.name}: member {path} is listed twice or already exists in {target}")
        # OS errors on our side (disk full, a file where a folder should be) are not a damaged archive.
        try:
            dst = open(out, "xb")
        except OSError as err:
            raise _LocalProblem(f"cannot write {out}: {err.strerror or err}") from None
        created.append(out)
        with read(handle, member) as src, dst:
            while chunk := src.read(CHUNK):
                written += len(chunk)
                if written > max_bytes:  # the declared sizes lied
                    raise PetprobeError(f"{archive.name}: unpacked data exceeds the {max_bytes:,}-byte limit")
                try:
                    dst.write(chunk)
                except OSError as err:
                    raise _LocalProblem(f"cannot write {out}: {err.strerror or err}") from None
        files += 1
    return files


def _remove(created: list[Path]) -> None:
    for path in reversed(created):  # files before the folders that hold them
        try:
            path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)
        except OSError:
            pass  # a folder that also holds files from elsewhere stays
