"""Downloading one file over HTTP, resumably, and only under its checksum.

``fetch`` streams a URL to ``<dest>.part`` with a progress bar, resumes a partial file with an
HTTP Range request, verifies the published checksum (an md5, or a sha256 prefix as in torchvision's
file names; sha256 is always recorded), and only then renames it to ``dest``: a dropped connection
or a bad checksum never leaves a file under the final name.

A leaf: it knows no dataset and no model, so both the backbones' weights
(``backbones.weights``) and the datasets' archives (``data.archives``) use it, and an edit here
re-runs only the stages that download.
"""

from __future__ import annotations

import http.client
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from petprobe.checksums import CHUNK, file_digests
from petprobe.errors import PetprobeError, one_line
from petprobe.progress import progress as progress_bar

__all__ = ["FetchResult", "fetch", "MAX_DOWNLOAD_BYTES"]


@dataclass(frozen=True)
class FetchResult:
    path: Path
    md5: str
    sha256: str
    bytes: int
    md5_verified: bool


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
          max_bytes: int = MAX_DOWNLOAD_BYTES, progress: bool = True, hint: str = "") -> FetchResult:
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
        raise PetprobeError(f"could not download {url} ({reason}){kept}" + (f". {hint}" if hint else ""))
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
