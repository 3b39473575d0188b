"""Downloading and unpacking official archives safely.

``fetch`` streams a URL to ``<dest>.part`` with a progress bar, resumes a partial file with an
HTTP Range request, verifies the published checksum (an md5, or a sha256 prefix as in torchvision's
file names; sha256 is always recorded), and only then renames it to ``dest``: a dropped connection
or a bad checksum never leaves a file under the final name.

``fetch_archive`` tries an archive's URLs in order (the current host first, retired ones after)
and holds the download to the archive's pins, recording them at the first download where nothing
is published.

``extract`` checks every member of a tar or zip archive *before* writing anything: no absolute
paths, no ``..``, no links or device files, and a bound on the unpacked size (zip bombs).
Members are written by this code, not by the archive library, so nothing escapes the target, and
a damaged archive (truncated, bad CRC, sizes that lie) is an error that removes what was written.
"""

from __future__ import annotations

import errno
import http.client
import json
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
from typing import TYPE_CHECKING

from petprobe.artefacts import DOWNLOAD_PINS
from petprobe.checksums import CHUNK, file_digests
from petprobe.errors import PetprobeError, one_line
from petprobe.outputs import write_json
from petprobe.progress import progress as progress_bar

if TYPE_CHECKING:
    from petprobe.data.datasets import Archive

__all__ = ["FetchResult", "fetch", "fetch_archive", "MIRROR_HINT", "extract", "copy_tree", "printable_name",
           "MAX_UNPACKED_BYTES", "MAX_DOWNLOAD_BYTES"]

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
               "archives> in params.yaml (or data.source: sample for a quick run on petprobe's embedded mini-sample)")


# Bounds on one file's download. The reference archives (about 800 MB each) take 14 minutes at
# 1 MB/s, well inside the deadline; a server that sends less than STALL_MIN_BYTES in STALL_S
# seconds (a trickle that keeps every socket read alive) has stalled; a body with no known size
# (no pinned size, no Content-Length) stops at MAX_DOWNLOAD_BYTES, four times the largest archive.
DOWNLOAD_DEADLINE_S = 3 * 3600.0
STALL_S = 60.0
STALL_MIN_BYTES = 64 * 1024
MAX_DOWNLOAD_BYTES = 4 * 2**30


class _Stalled(TimeoutError):
    """Too few bytes in a stall window. Like a socket timeout, a failed attempt even if some bytes came."""


class _GiveUp(Exception):
    """A download that retrying cannot fix (over its size cap or its deadline)."""

    def __init__(self, message: str, discard: bool):
        super().__init__(message)
        self.discard = discard  # the partial file is not a prefix of anything useful


def fetch(url: str, dest: str | Path, *, md5: str | None = None, sha256_prefix: str | None = None,
          size: int | None = None, attempts: int = 5, timeout: float = 60.0, backoff: float = 0.5,
          deadline: float = DOWNLOAD_DEADLINE_S, stall_s: float = STALL_S, stall_bytes: int = STALL_MIN_BYTES,
          max_bytes: int = MAX_DOWNLOAD_BYTES, progress: bool = True, hint: str = MIRROR_HINT) -> FetchResult:
    """Download ``url`` to ``dest`` (resuming ``dest.part``) and verify it; return its digests.

    ``attempts`` bounds the failures in a row that brought no new bytes: a flaky connection that
    drops every few hundred MB still finishes, a dead one gives up. ``timeout`` bounds every
    socket wait, so a silent server is a failed attempt, not a hang; a server sending fewer than
    ``stall_bytes`` in ``stall_s`` seconds is one too, and ``deadline`` (seconds) bounds the whole
    file, however the server behaves. ``size``, the expected size in bytes when it is pinned,
    caps the body and must match; otherwise the server's Content-Length caps it, and without one
    ``max_bytes`` does. ``hint`` ends the error when the download cannot be made: what to do
    without internet.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        got_md5, got_sha, n = file_digests(dest)
        if _checksum_problem(got_md5, got_sha, md5, sha256_prefix, n, size) is None:
            return FetchResult(dest, got_md5, got_sha, n, md5 is not None)
        dest.unlink()  # an earlier file that no longer matches the published checksum
    part = dest.with_name(dest.name + ".part")
    limits = _Limits(time.monotonic() + deadline, deadline, min(timeout, stall_s), stall_s, stall_bytes,
                     size if size is not None else max_bytes, size is not None)
    failures, last_error = 0, None
    while failures < attempts:
        before = _size(part)
        try:
            _stream(url, part, limits, progress=progress)
            last_error = None
            break
        except _GiveUp as err:
            if err.discard:
                part.unlink(missing_ok=True)
            kept = f"; the partial file {part} is kept for a later resume" if part.exists() else ""
            raise PetprobeError(f"could not download {url} ({err}){kept}") from None
        except urllib.error.HTTPError as err:
            last_error = err
            if 400 <= err.code < 500:  # will not get better by retrying
                break
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as err:
            # ValueError: a malformed header (Content-Length "abc") or response line
            last_error = err
        if _size(part) > before and not isinstance(last_error, TimeoutError):
            failures = 0  # progress, then a drop: resume at once (a stall or silence counts as a failure)
            continue
        failures += 1
        if failures < attempts:
            time.sleep(min(2 ** (failures - 1) * backoff, 8.0, max(limits.deadline_at - time.monotonic(), 0.0)))
    if last_error is not None:
        reason = getattr(last_error, "reason", None) or last_error
        kept = f"; the partial file {part} is kept for a later resume" if part.exists() else ""
        reason = one_line(reason) if isinstance(reason, BaseException) else reason
        raise PetprobeError(f"could not download {url} ({reason}){kept}. {hint}")
    got_md5, got_sha, n = file_digests(part)
    if (problem := _checksum_problem(got_md5, got_sha, md5, sha256_prefix, n, size)) is not None:
        part.unlink()
        raise PetprobeError(f"checksum mismatch for {url}: {problem}; the download was discarded")
    os.replace(part, dest)
    return FetchResult(dest, got_md5, got_sha, n, md5 is not None)


@dataclass(frozen=True)
class _Limits:
    deadline_at: float  # time.monotonic() by which the file must be whole
    deadline: float
    socket_timeout: float
    stall_s: float
    stall_bytes: int
    cap: int  # no more bytes than this, in all
    pinned: bool  # cap is the pinned size (not just a bound)


def _checksum_problem(got_md5: str, got_sha256: str, md5: str | None, sha256_prefix: str | None,
                      got_size: int | None = None, size: int | None = None) -> str | None:
    if size is not None and got_size != size:
        return f"{got_size:,} bytes, expected {size:,}"
    if md5 is not None and got_md5 != md5:
        return f"md5 {got_md5}, published {md5}"
    if sha256_prefix is not None and not got_sha256.startswith(sha256_prefix):
        return f"sha256 {got_sha256[:12]}…, published {sha256_prefix}…"
    return None


def fetch_archive(archive: Archive, downloads: str | Path, **fetch_options) -> tuple[FetchResult, str]:
    """Fetch ``archive`` into ``downloads`` from the first of its URLs that gives the right file.

    Each URL is tried in order with ``fetch`` (so a partial file left by one host is resumed from
    the next: the same file, checked against the same checksum). A download is accepted only if
    it matches the published md5 and the pinned size and sha256. An archive with no md5 and no
    sha256 pin is pinned at its first download: its size and sha256 go into
    ``downloads/pinned.json`` and any later download that differs is refused (trust on first use).
    Returns the result and the URL it came from.
    """
    downloads = Path(downloads)
    pins_path = downloads / DOWNLOAD_PINS
    pins = _read_pins(pins_path)
    recorded = pins.get(archive.filename) if archive.md5 is None and archive.sha256 is None else None
    sha256 = archive.sha256 or (recorded or {}).get("sha256")
    size = archive.size if archive.size is not None else (recorded or {}).get("bytes")
    failures = []
    for url in archive.urls:
        try:
            got = fetch(url, downloads / archive.filename, md5=archive.md5, sha256_prefix=sha256, size=size, hint="",
                        **fetch_options)
        except PetprobeError as err:
            failures.append(str(err).rstrip(". "))
            continue
        if archive.md5 is None and sha256 is None:
            pins[archive.filename] = {"bytes": got.bytes, "sha256": got.sha256, "url": url,
                                      "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            write_json(pins_path, pins)
        return got, url
    pinned = (f" (its sha256 was recorded at the first download in {pins_path}; delete that entry to accept a "
              f"changed archive)" if recorded else "")
    raise PetprobeError(f"could not get {archive.filename} from any of its {len(archive.urls)} URLs{pinned}: "
                        + " | ".join(failures) + f". {MIRROR_HINT}")


def _read_pins(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        pins = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise PetprobeError(f"{path} is unreadable ({one_line(err)}); it pins downloaded archives, "
                            f"restore or delete it") from None
    if not isinstance(pins, dict):
        raise PetprobeError(f"{path} is not a JSON object; it pins downloaded archives, restore or delete it")
    for name, pin in pins.items():  # as fetch_archive writes them: a size and a full sha256
        if not (isinstance(pin, dict) and type(pin.get("bytes")) is int and pin["bytes"] >= 0
                and isinstance(pin.get("sha256"), str) and len(pin["sha256"]) == 64
                and all(c in "0123456789abcdef" for c in pin["sha256"])):
            raise PetprobeError(f"{path}: the entry for {printable_name(str(name))[:100]!r} is not "
                                "{bytes: <size>, sha256: <64 hex digits>, ...}; restore or delete it")
    return pins



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


def _stream(url: str, part: Path, limits: _Limits, *, progress: bool) -> None:
    """Append the rest of ``url`` to ``part``; raise if the body stops short, stalls or overruns."""
    if time.monotonic() > limits.deadline_at:
        raise _GiveUp(f"not complete within the {limits.deadline:g} s deadline", discard=False)
    have = _size(part)
    if have > limits.cap:
        raise _GiveUp(f"the partial file is larger than the {limits.cap:,}-byte limit", discard=True)
    request = urllib.request.Request(url, headers={"User-Agent": "petprobe"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=limits.socket_timeout)
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
        total = start + int(length) if length is not None and length.strip().isdigit() else None
        if total is not None and total > limits.cap:
            what = "the pinned size" if limits.pinned else "the limit"
            raise _GiveUp(f"the server offers {total:,} bytes, more than {what} of {limits.cap:,}", discard=start > 0)
        cap = total if total is not None else limits.cap
        received = start
        window_start, window_bytes = time.monotonic(), 0
        with open(part, "r+b" if start else "wb") as fh, progress_bar(
                total=total, initial=start, unit="B", unit_scale=True, desc=part.name.removesuffix(".part"),
                disable=not progress) as bar:
            fh.seek(start)
            fh.truncate()
            # read1: whatever has arrived (up to CHUNK), so a trickling server is seen at once,
            # where read(CHUNK) would wait for a whole MiB.
            while chunk := response.read1(CHUNK):
                if received + len(chunk) > cap:
                    raise _GiveUp(f"the body is longer than the {cap:,} bytes expected", discard=True)
                fh.write(chunk)
                received += len(chunk)
                window_bytes += len(chunk)
                bar.update(len(chunk))
                now = time.monotonic()
                if now > limits.deadline_at:
                    fh.flush()
                    raise _GiveUp(f"not complete within the {limits.deadline:g} s deadline", discard=False)
                if now - window_start >= limits.stall_s:
                    if window_bytes < limits.stall_bytes:
                        raise _Stalled(f"stalled: {window_bytes} bytes in {now - window_start:.0f} s")
                    window_start, window_bytes = now, 0
            fh.flush()
            os.fsync(fh.fileno())
    if total is not None and received < total:
        raise ConnectionError(f"connection closed after {received} of {total} bytes")
    if limits.pinned and received < limits.cap:
        raise ConnectionError(f"connection closed after {received} of {limits.cap} bytes (the pinned size)")


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
        if not _utf8(str(path)):  # a tar name in a legacy encoding: as copy_tree, left out and recorded
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
            elif not _utf8(name):
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
            elif not _utf8(name):
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


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")  # a byte that is not UTF-8 arrives as a lone surrogate (surrogateescape)
    except UnicodeEncodeError:
        return False
    return True


def printable_name(name: str) -> str:
    """The name with undecodable bytes shown as \\xNN, so a UTF-8 record can always hold it."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
