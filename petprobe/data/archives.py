"""Downloading and unpacking official archives safely.

``fetch`` streams a URL to ``<dest>.part`` with a progress bar, resumes a partial file with an
HTTP Range request, verifies the published checksum (an md5, or a sha256 prefix as in torchvision's
file names; sha256 is always recorded), and only then renames it to ``dest``: a dropped connection
or a bad checksum never leaves a file under the final name.

``extract`` checks every member of a tar or zip archive *before* writing anything: no absolute
paths, no ``..``, no links or device files, and a bound on the unpacked size (zip bombs).
Members are written by this code, not by the archive library, so nothing escapes the target, and
a damaged archive (truncated, bad CRC, sizes that lie) is an error that removes what was written.
"""

from __future__ import annotations

import http.client
import os
import shutil
import stat
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from petprobe.progress import progress as progress_bar

from petprobe.checksums import CHUNK, file_digests
from petprobe.errors import PetprobeError, one_line

__all__ = ["FetchResult", "fetch", "MIRROR_HINT", "extract", "copy_tree", "MAX_UNPACKED_BYTES"]

# The largest reference archive unpacks to under 1 GB; 32 GiB leaves room for real datasets
# while stopping an archive that claims (or inflates to) absurd sizes.
MAX_UNPACKED_BYTES = 32 * 2**30


@dataclass(frozen=True)
class FetchResult:
    path: Path
    md5: str
    sha256: str
    bytes: int
    md5_verified: bool


# What a failed dataset download tells the user to do instead.
MIRROR_HINT = ("Without internet, set data.source: mirror and data.mirror: <folder laid out like the extracted "
               "archives> in params.yaml")


def fetch(url: str, dest: str | Path, *, md5: str | None = None, sha256_prefix: str | None = None, attempts: int = 5,
          timeout: float = 60.0, backoff: float = 0.5, progress: bool = True, hint: str = MIRROR_HINT) -> FetchResult:
    """Download ``url`` to ``dest`` (resuming ``dest.part``) and verify it; return its digests.

    ``attempts`` bounds the failures in a row that brought no new bytes: a flaky connection that
    drops every few hundred MB still finishes, a dead one gives up. ``timeout`` bounds every
    socket wait, so a stalled server is a failed attempt, not a hang. ``hint`` ends the error
    when the download cannot be made: what to do without internet.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        got_md5, got_sha, n = file_digests(dest)
        if _checksum_problem(got_md5, got_sha, md5, sha256_prefix) is None:
            return FetchResult(dest, got_md5, got_sha, n, md5 is not None)
        dest.unlink()  # an earlier file that no longer matches the published checksum
    part = dest.with_name(dest.name + ".part")
    failures, last_error = 0, None
    while failures < attempts:
        before = _size(part)
        try:
            _stream(url, part, timeout=timeout, progress=progress)
            last_error = None
            break
        except urllib.error.HTTPError as err:
            last_error = err
            if 400 <= err.code < 500:  # will not get better by retrying
                break
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            last_error = err
        if _size(part) > before:
            failures = 0  # progress: resume at once
            continue
        failures += 1
        if failures < attempts:
            time.sleep(min(2 ** (failures - 1) * backoff, 8.0))
    if last_error is not None:
        reason = getattr(last_error, "reason", None) or last_error
        kept = f"; the partial file {part} is kept for a later resume" if part.exists() else ""
        raise PetprobeError(f"could not download {url} ({reason}){kept}. {hint}")
    got_md5, got_sha, n = file_digests(part)
    if (problem := _checksum_problem(got_md5, got_sha, md5, sha256_prefix)) is not None:
        part.unlink()
        raise PetprobeError(f"checksum mismatch for {url}: {problem}; the download was discarded")
    os.replace(part, dest)
    return FetchResult(dest, got_md5, got_sha, n, md5 is not None)


def _checksum_problem(got_md5: str, got_sha256: str, md5: str | None, sha256_prefix: str | None) -> str | None:
    if md5 is not None and got_md5 != md5:
        return f"md5 {got_md5}, published {md5}"
    if sha256_prefix is not None and not got_sha256.startswith(sha256_prefix):
        return f"sha256 {got_sha256[:12]}…, published {sha256_prefix}…"
    return None


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _content_range(response) -> tuple[int | None, int | None]:
    """(first byte, full length) from a Content-Range header such as ``bytes 100-199/1000``."""
    value = (response.headers.get("Content-Range") or "").strip()
    unit, _, spec = value.partition(" ")
    if unit != "bytes" or "/" not in spec:
        return None, None
    span, _, total = spec.partition("/")
    first = span.split("-", 1)[0]
    return (int(first) if first.isdigit() else None), (int(total) if total.isdigit() else None)


def _stream(url: str, part: Path, *, timeout: float, progress: bool) -> None:
    """Append the rest of ``url`` to ``part``; raise if the body stops short."""
    have = _size(part)
    request = urllib.request.Request(url, headers={"User-Agent": "petprobe"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:
            _, total = _content_range(err)
            if total == have:  # nothing left to send: the part file is already whole
                return
            # A part file longer than the remote file (or of unknown fit) is not a prefix of it.
            part.unlink()
            raise ConnectionError(f"the partial file did not fit the remote file ({have} bytes); starting again") from None
        raise
    with response:
        start = 0
        if have and response.status == 206:
            start, _ = _content_range(response)
            if start is None or start > have:  # a gap we cannot fill: start again
                part.unlink()
                raise ConnectionError(f"the server answered the resume with an unusable range ({start})")
        # start < have: the server resent bytes we hold (they are the same file); 200: it ignored Range.
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        received = start
        with open(part, "r+b" if start else "wb") as fh, progress_bar(
                total=total, initial=start, unit="B", unit_scale=True, desc=part.name.removesuffix(".part"),
                disable=not progress) as bar:
            fh.seek(start)
            fh.truncate()
            while chunk := response.read(CHUNK):
                fh.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            fh.flush()
            os.fsync(fh.fileno())
    if total is not None and received < total:
        raise ConnectionError(f"connection closed after {received} of {total} bytes")


def _safe_member_path(name: str, archive: Path) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise PetprobeError(f"{archive.name}: refusing member with an absolute path: {name!r}")
    if ".." in path.parts:
        raise PetprobeError(f"{archive.name}: refusing member that escapes the target: {name!r}")
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


# What a damaged archive raises while it is listed or read (truncated gzip, bad CRC, ...).
_DAMAGED = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError)


def extract(archive: str | Path, target: str | Path, *, max_bytes: int = MAX_UNPACKED_BYTES) -> int:
    """Unpack a .tar(.gz) or .zip ``archive`` into ``target``; return the number of files written.

    All or nothing: on any error the files and folders this call created are removed again.
    """
    archive, target = Path(archive), Path(target)
    if zipfile.is_zipfile(archive):
        opener, members, read = zipfile.ZipFile, _zip_members, lambda a, m: a.open(m)
    elif tarfile.is_tarfile(archive):
        opener, members, read = tarfile.open, _tar_members, lambda a, m: a.extractfile(m)
    else:
        raise PetprobeError(f"{archive} is neither a tar nor a zip archive")
    created: list[Path] = []
    try:
        with opener(archive) as handle:
            checked = list(members(archive, handle))
            declared = sum(size for *_, size in checked)
            if declared > max_bytes:
                raise PetprobeError(f"{archive.name}: unpacks to {declared:,} bytes, over the {max_bytes:,}-byte limit")
            return _write_members(archive, handle, checked, read, target, max_bytes, created)
    except PetprobeError:
        _remove(created)
        raise
    except _DAMAGED as err:
        _remove(created)
        raise PetprobeError(f"{archive} is damaged or unreadable ({one_line(err)}); "
                            f"delete it and download again") from None
    except BaseException:  # Ctrl-C included: leave no half-unpacked tree behind
        _remove(created)
        raise


def _write_members(archive: Path, handle, checked, read, target: Path, max_bytes: int, created: list[Path]) -> int:
    written = files = 0
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    for path, member, is_dir, size in progress_bar(checked, desc=f"unpack {archive.name}", unit="file", leave=False):
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
            raise PetprobeError(f"cannot write {out}: {err.strerror or err}") from None
        created.append(out)
        with read(handle, member) as src, dst:
            while chunk := src.read(CHUNK):
                written += len(chunk)
                if written > max_bytes:  # the declared sizes lied
                    raise PetprobeError(f"{archive.name}: unpacked data exceeds the {max_bytes:,}-byte limit")
                try:
                    dst.write(chunk)
                except OSError as err:
                    raise PetprobeError(f"cannot write {out}: {err.strerror or err}") from None
        files += 1
    return files


def _remove(created: list[Path]) -> None:
    for path in reversed(created):  # files before the folders that hold them
        try:
            path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)
        except OSError:
            pass  # a folder that also holds files from elsewhere stays


def copy_tree(src: Path, dst: Path) -> int:
    """Copy every regular file under ``src`` into ``dst`` byte for byte; return the count.

    A folder that cannot be listed is an error, not a silent gap in the copy.
    """
    def unreadable(err: OSError):
        raise PetprobeError(f"cannot read folder {err.filename}: {err.strerror or err}")

    files = []
    for folder, dirs, names in os.walk(src, onerror=unreadable, followlinks=False):
        dirs.sort()
        files += [Path(folder, name) for name in names if Path(folder, name).is_file()]
    n = 0
    for path in progress_bar(sorted(files), desc=f"copy {src.name}", unit="file", leave=False):
        out = dst / path.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(path, out)
        except OSError as err:
            raise PetprobeError(f"cannot copy {path}: {err.strerror or err}") from None
        n += 1
    return n
