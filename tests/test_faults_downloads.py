"""Downloads and archives under faults: a real HTTP server on 127.0.0.1 that drops connections,
ignores or mangles Range requests, stalls or serves wrong bytes; archives that try to escape the
target or unpack to absurd sizes. Nothing may be promoted under a final name unless it is whole.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import socket
import stat
import tarfile
import threading
import time
import zipfile
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import PETS
from petprobe.checksums import tree_digest
from petprobe.data.archives import MIRROR_HINT
from petprobe.data.datasets import BUILTIN_DATASETS, Archive
from petprobe.data.sources import populate
from petprobe.data.unpack import extract
from petprobe.errors import PetprobeError
from petprobe.fetch import fetch
from petprobe.outputs import atomic_dir

pytestmark = pytest.mark.unit

# --- a small, misbehaving-on-request HTTP server ------------------------------------------------


@dataclass
class Route:
    data: bytes
    mode: str = "ok"  # ok | drop | wrong | ignore-range | restart-range | stall | no-length | trickle | endless
    # "drop"/"no-length": request i sends plan[i] body bytes, then closes the connection; once the
    # plan is used up, every request sends ``then`` bytes (None: the route behaves).
    plan: list[int] = dataclasses.field(default_factory=list)
    then: int | None = None
    stall_s: float = 0.0

    def next_drop(self) -> int | None:
        return self.plan.pop(0) if self.plan else self.then


class _Handler(BaseHTTPRequestHandler):
    timeout = 10  # a client that stops reading cannot pin a server thread for long

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        route = server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        data = route.data if route.mode != "wrong" else bytes(b ^ 0x5A for b in route.data)
        start = 0
        wanted = self.headers.get("Range")
        if wanted and route.mode not in ("ignore-range", "no-length"):
            start = int(wanted.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if route.mode == "restart-range":  # a proxy that answers a resume from byte 0
                start = 0
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        if route.mode not in ("no-length", "endless"):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            if route.mode == "trickle":  # one byte every stall_s seconds: every socket read succeeds
                for i in range(len(body)):
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                    time.sleep(route.stall_s)
            if route.mode == "endless":  # a body that never ends, as fast as the client reads
                while True:
                    self.wfile.write(body[:65536])
            drop = route.next_drop() if route.mode in ("drop", "no-length") else None
            if drop is not None:
                self.wfile.write(body[:drop])
                self.wfile.flush()
                self.close_connection = True
                return
            if route.mode == "stall":
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                time.sleep(route.stall_s)
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should on a stall


class LocalServer:
    def __init__(self, lifetime_s: float = 120.0):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.routes, self.httpd.requests = {}, []
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        # Bounded lifetime: the server stops by itself even if a test never reaches its teardown.
        self.watchdog = threading.Timer(lifetime_s, self.httpd.shutdown)
        self.watchdog.daemon = True

    def __enter__(self):
        self.thread.start()
        self.watchdog.start()
        return self

    def __exit__(self, *exc):
        self.watchdog.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def add(self, name: str, data: bytes, **behaviour) -> str:
        self.httpd.routes["/" + name] = Route(data, **behaviour)
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    @property
    def requests(self) -> list[tuple[str, str | None]]:
        return self.httpd.requests


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1")  # an http_proxy in the environment must not intercept
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with LocalServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def payload() -> bytes:
    """2.5 MB of real photo bytes, so downloads span several 1 MiB read chunks."""
    images = sorted((PETS / "images").glob("*.jpg"))
    data = b"".join(p.read_bytes() for p in images[:200])
    assert len(data) > 2_500_000
    return data[:2_500_000]


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def quick(**kw):
    """fetch settings for tests: no progress bar, short timeouts and back-off."""
    return {"progress": False, "timeout": 5.0, "backoff": 0.01, **kw}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- fetch ---------------------------------------------------------------------------------------


def test_clean_download_is_promoted_with_checksums(server, payload, tmp_path):
    url = server.add("a.bin", payload)
    got = fetch(url, tmp_path / "a.bin", md5=md5(payload), **quick())
    assert (tmp_path / "a.bin").read_bytes() == payload
    assert got.md5_verified and got.sha256 == hashlib.sha256(payload).hexdigest() and got.bytes == len(payload)
    assert leftovers(tmp_path) == ["a.bin"]


def test_dropped_connection_resumes_from_the_partial_file(server, payload, tmp_path):
    url = server.add("a.bin", payload, mode="drop", plan=[700_000, 700_000])
    fetch(url, tmp_path / "a.bin", md5=md5(payload), **quick(attempts=2))
    assert (tmp_path / "a.bin").read_bytes() == payload
    # Three requests: the first from 0, then two resumes, each from where the last one stopped.
    assert [r for _, r in server.requests] == [None, "bytes=700000-", "bytes=1400000-"]


def test_connection_dropping_every_few_bytes_still_finishes_if_each_try_progresses(server, payload, tmp_path):
    # attempts=2 bounds failures *without progress*; this needs 4 connections but each one helps.
    url = server.add("a.bin", payload, mode="drop", then=800_000)
    fetch(url, tmp_path / "a.bin", md5=md5(payload), **quick(attempts=2))
    assert (tmp_path / "a.bin").read_bytes() == payload
    assert len(server.requests) == 4


def test_dead_connection_gives_a_clear_error_keeps_the_part_and_a_later_run_resumes(server, payload, tmp_path):
    url = server.add("a.bin", payload, mode="drop", then=0)
    with pytest.raises(PetprobeError, match="could not download .*a.bin"):
        fetch(url, tmp_path / "a.bin", md5=md5(payload), **quick(attempts=3))
    assert not (tmp_path / "a.bin").exists()

    # Some bytes arrive, then the line dies: the partial file is kept, under its .part name only.
    server.add("a.bin", payload, mode="drop", plan=[1_000_000], then=0)
    with pytest.raises(PetprobeError, match="partial file .*a.bin.part is kept"):
        fetch(url, tmp_path / "a.bin", md5=md5(payload), **quick(attempts=2))
    assert leftovers(tmp_path) == ["a.bin.part"]
    assert (tmp_path / "a.bin.part").stat().st_size == 1_000_000

    # The network is back: the next run resumes at 1,000,000 and the file is whole.
    server.add("a.bin", payload)
    server.requests.clear()
    fetch(url, tmp_path / "a.bin", md5=md5(payload), **quick())
    assert server.requests == [("/a.bin", "bytes=1000000-")]
    assert (tmp_path / "a.bin").read_bytes() == payload and leftovers(tmp_path) == ["a.bin"]


def test_checksum_mismatch_is_an_error_and_nothing_is_promoted_or_kept(server, payload, tmp_path):
    url = server.add("a.bin", payload, mode="wrong")
    with pytest.raises(PetprobeError, match="checksum mismatch .*the download was discarded"):
        fetch(url, tmp_path / "a.bin", md5=md5(payload), **quick())
    assert leftovers(tmp_path) == []  # neither a.bin nor a .part that a resume would build on


def test_sha256_prefix_is_checked_like_torchvision_file_names(server, payload, tmp_path):
    # How torchvision weights are published: the first hex digits of the sha256 in the file name.
    prefix = hashlib.sha256(payload).hexdigest()[:8]
    url = server.add("w.pth", payload)
    got = fetch(url, tmp_path / "w.pth", sha256_prefix=prefix, **quick())
    assert got.sha256.startswith(prefix) and (tmp_path / "w.pth").read_bytes() == payload
    with pytest.raises(PetprobeError, match=f"checksum mismatch .*sha256 .*published {prefix}… *; the download was"):
        fetch(server.add("x.pth", payload, mode="wrong"), tmp_path / "x.pth", sha256_prefix=prefix, **quick())
    assert leftovers(tmp_path) == ["w.pth"]


def test_server_ignoring_range_restarts_instead_of_appending(server, payload, tmp_path):
    (tmp_path / "a.bin.part").write_bytes(payload[:1_000_000])
    url = server.add("a.bin", payload, mode="ignore-range")
    fetch(url, tmp_path / "a.bin", **quick())  # no checksum: only the Range handling protects us
    assert (tmp_path / "a.bin").read_bytes() == payload


def test_server_answering_a_resume_from_byte_zero_is_not_appended(server, payload, tmp_path):
    (tmp_path / "a.bin.part").write_bytes(payload[:1_000_000])
    url = server.add("a.bin", payload, mode="restart-range")
    fetch(url, tmp_path / "a.bin", **quick())
    assert (tmp_path / "a.bin").read_bytes() == payload


def test_part_file_longer_than_the_remote_file_is_discarded_not_promoted(server, payload, tmp_path):
    # e.g. left over from another version of the archive; the server answers 416.
    (tmp_path / "a.bin.part").write_bytes(b"x" * (len(payload) + 10))
    url = server.add("a.bin", payload)
    fetch(url, tmp_path / "a.bin", **quick())
    assert (tmp_path / "a.bin").read_bytes() == payload


def test_complete_part_file_is_promoted_after_verification(server, payload, tmp_path):
    (tmp_path / "a.bin.part").write_bytes(payload)
    url = server.add("a.bin", payload)
    fetch(url, tmp_path / "a.bin", md5=md5(payload), **quick())
    assert server.requests == [("/a.bin", f"bytes={len(payload)}-")]  # answered 416: nothing re-sent
    assert (tmp_path / "a.bin").read_bytes() == payload


def test_stalled_server_times_out_instead_of_hanging(server, payload, tmp_path):
    url = server.add("a.bin", payload, mode="stall", stall_s=5.0)
    started = time.monotonic()
    with pytest.raises(PetprobeError, match="could not download"):
        fetch(url, tmp_path / "a.bin", md5=md5(payload), **quick(timeout=0.5, attempts=1))
    assert time.monotonic() - started < 4.0
    assert not (tmp_path / "a.bin").exists()


def test_missing_file_is_one_request_and_a_clear_error(server, tmp_path):
    url = server.add("other.bin", b"x").replace("other.bin", "missing.bin")
    with pytest.raises(PetprobeError, match=r"could not download .*missing.bin \(Not Found\)"):
        fetch(url, tmp_path / "missing.bin", **quick(attempts=5))
    assert len(server.requests) == 1 and leftovers(tmp_path) == []


def test_nothing_listening_is_a_clear_error(tmp_path):
    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(PetprobeError, match="could not download .*data.source: mirror"):
        fetch(f"http://127.0.0.1:{port}/a.bin", tmp_path / "a.bin", hint=MIRROR_HINT, **quick(attempts=2))
    assert leftovers(tmp_path) == []


def test_body_without_length_cut_short_is_caught_by_the_checksum(server, payload, tmp_path):
    # An HTTP/1.0 body without Content-Length ends when the connection closes: a drop looks like
    # a complete file, and only a published checksum can tell (see the catsdogs note in archives).
    url = server.add("a.bin", payload, mode="no-length", then=1_000_000)
    with pytest.raises(PetprobeError, match="checksum mismatch"):
        fetch(url, tmp_path / "a.bin", md5=md5(payload), **quick())
    assert leftovers(tmp_path) == []


def test_trickling_server_is_a_stall_not_a_hang(server, payload, tmp_path):
    url = server.add("a.bin", payload, mode="trickle", stall_s=0.2)
    started = time.monotonic()
    with pytest.raises(PetprobeError, match=r"could not download .*\(stalled: \d+ bytes in 1 s\)"):
        fetch(url, tmp_path / "a.bin", md5=md5(payload), **quick(attempts=2, stall_s=1.0, stall_bytes=1024))
    assert time.monotonic() - started < 6.0
    assert not (tmp_path / "a.bin").exists()


def test_whole_file_deadline_holds_even_when_every_read_makes_progress(server, payload, tmp_path):
    url = server.add("a.bin", payload, mode="trickle", stall_s=0.05)
    started = time.monotonic()
    with pytest.raises(PetprobeError, match=r"not complete within the 1.5 s deadline\); the partial file"):
        fetch(url, tmp_path / "a.bin", md5=md5(payload), **quick(deadline=1.5, stall_s=60.0, stall_bytes=1))
    assert time.monotonic() - started < 4.0
    assert not (tmp_path / "a.bin").exists() and (tmp_path / "a.bin.part").exists()  # kept for a resume


def test_endless_body_stops_at_the_size_cap_and_is_discarded(server, payload, tmp_path):
    url = server.add("a.bin", payload, mode="endless")
    with pytest.raises(PetprobeError, match="the body is longer than the 3,000,000 bytes expected"):
        fetch(url, tmp_path / "a.bin", **quick(max_bytes=3_000_000))
    assert leftovers(tmp_path) == []
    with pytest.raises(PetprobeError, match="longer than the 2,500,000 bytes expected"):  # a pinned size caps it too
        fetch(url, tmp_path / "a.bin", size=len(payload), **quick())
    assert leftovers(tmp_path) == []


def test_pinned_size_refuses_a_larger_offer_and_never_promotes_a_short_body(server, payload, tmp_path):
    url = server.add("a.bin", payload)
    with pytest.raises(PetprobeError, match="offers 2,500,000 bytes, more than the pinned size of 1,000"):
        fetch(url, tmp_path / "a.bin", size=1000, **quick())
    assert leftovers(tmp_path) == [] and len(server.requests) == 1
    # No checksum (as catsdogs), a body without Content-Length that stops short: the pinned size catches it.
    short = server.add("short.bin", payload, mode="no-length", then=1_000_000)
    with pytest.raises(PetprobeError, match=r"connection closed after 1000000 of 2500000 bytes \(the pinned size\)"):
        fetch(short, tmp_path / "short.bin", size=len(payload), **quick(attempts=2))
    assert not (tmp_path / "short.bin").exists()
    fetch(url, tmp_path / "a.bin", size=len(payload), **quick())
    assert (tmp_path / "a.bin").read_bytes() == payload


# --- extract -------------------------------------------------------------------------------------


def add_tar_member(tar: tarfile.TarFile, name: str, data: bytes = b"", **fields) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if data else None)


def make_tar(path: Path, members, mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for member in members:
            add_tar_member(tar, *member[:2], **(member[2] if len(member) > 2 else {}))
    return path


def make_zip(path: Path, members) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data, *attr in members:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if attr:
                info.external_attr = attr[0] << 16
            zf.writestr(info, data)
    return path


@pytest.fixture
def sandbox(tmp_path):
    """(archive folder, target folder, an 'outside' folder that must stay empty)."""
    folders = [tmp_path / n for n in ("archives", "box/target", "box")]
    for f in folders:
        f.mkdir(parents=True, exist_ok=True)
    return folders


def everything_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


GOOD = ("ok/photo.jpg", b"\xff\xd8real bytes")
EVIL_TAR = {
    "dotdot": [GOOD, ("ok/../../escaped.txt", b"pwned")],
    "absolute": [GOOD, ("/tmp/petprobe-absolute.txt", b"pwned")],
    "symlink": [GOOD, ("ok/link", b"", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}),
                ("ok/link", b"written through the link")],
    "hardlink": [GOOD, ("ok/hard", b"", {"type": tarfile.LNKTYPE, "linkname": "/etc/passwd"})],
    "device": [GOOD, ("ok/dev", b"", {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3})],
    "fifo": [GOOD, ("ok/fifo", b"", {"type": tarfile.FIFOTYPE})],
}
EVIL_ZIP = {
    "dotdot": [GOOD, ("../escaped.txt", b"pwned")],
    "backslash-dotdot": [GOOD, ("ok\\..\\..\\escaped.txt", b"pwned")],
    "absolute": [GOOD, ("/tmp/petprobe-absolute.txt", b"pwned")],
    "drive-letter": [GOOD, ("C:/escaped.txt", b"pwned")],
    "symlink": [GOOD, ("ok/link", b"/etc/passwd", stat.S_IFLNK | 0o777)],
}


@pytest.mark.parametrize("case", sorted(EVIL_TAR))
def test_malicious_tar_member_is_rejected_before_anything_is_written(sandbox, case):
    archives, target, outside = sandbox
    archive = make_tar(archives / f"{case}.tar.gz", EVIL_TAR[case])
    with pytest.raises(PetprobeError, match="refusing"):
        extract(archive, target)
    assert everything_under(outside) == ["target"] and everything_under(target) == []
    assert not Path("/tmp/petprobe-absolute.txt").exists()


@pytest.mark.parametrize("case", sorted(EVIL_ZIP))
def test_malicious_zip_member_is_rejected_before_anything_is_written(sandbox, case):
    archives, target, outside = sandbox
    archive = make_zip(archives / f"{case}.zip", EVIL_ZIP[case])
    with pytest.raises(PetprobeError, match="refusing"):
        extract(archive, target)
    assert everything_under(outside) == ["target"] and everything_under(target) == []
    assert not Path("/tmp/petprobe-absolute.txt").exists()


def test_good_archives_unpack_byte_for_byte(sandbox):
    archives, target, _ = sandbox
    photo = (PETS / "images" / "Bengal_107.jpg").read_bytes()
    members = [("PetImages/Cat/1.jpg", photo), ("PetImages/Dog/2.jpg", photo[::-1])]
    assert extract(make_tar(archives / "a.tar.gz", members), target / "t") == 2
    assert extract(make_zip(archives / "a.zip", members), target / "z") == 2
    for sub in ("t", "z"):
        assert (target / sub / "PetImages/Cat/1.jpg").read_bytes() == photo
        assert (target / sub / "PetImages/Dog/2.jpg").read_bytes() == photo[::-1]


def test_archive_declaring_too_much_data_is_rejected_before_unpacking(sandbox):
    archives, target, _ = sandbox
    # A real zip bomb in miniature: 64 MB of zeros deflate to ~60 KB.
    bomb = make_zip(archives / "bomb.zip", [("zeros.bin", bytes(64 * 2**20))])
    assert bomb.stat().st_size < 200_000
    with pytest.raises(PetprobeError, match="unpacks to 67,108,864 bytes, over the 16,777,216-byte limit"):
        extract(bomb, target, max_bytes=16 * 2**20)
    tar_bomb = make_tar(archives / "bomb.tar.gz", [("a.bin", bytes(10 * 2**20)), ("b.bin", bytes(10 * 2**20))])
    with pytest.raises(PetprobeError, match="over the 16,777,216-byte limit"):
        extract(tar_bomb, target, max_bytes=16 * 2**20)
    assert everything_under(target) == []


def test_zip_lying_about_its_sizes_is_stopped_and_cleaned_up(sandbox):
    archives, target, _ = sandbox
    good = (PETS / "images" / "Bengal_107.jpg").read_bytes()
    archive = make_zip(archives / "liar.zip", [("a/first.jpg", good), ("a/zeros.bin", bytes(8 * 2**20))])
    # Patch the sizes of zeros.bin (local header and central directory) to claim 1,000 bytes.
    raw = bytearray(archive.read_bytes())
    true_size = (8 * 2**20).to_bytes(4, "little")
    assert raw.count(true_size) == 2
    archive.write_bytes(bytes(raw).replace(true_size, (1000).to_bytes(4, "little")))
    with pytest.raises(PetprobeError, match="damaged or unreadable"):
        extract(archive, target, max_bytes=2 * 2**20)
    assert everything_under(target) == []  # first.jpg, already written, was removed again


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_truncated_archive_is_a_clear_error_and_leaves_nothing(sandbox, kind):
    archives, target, _ = sandbox
    photos = [(f"x/{p.name}", p.read_bytes()) for p in sorted((PETS / "images").glob("*.jpg"))[:6]]
    full = (make_tar if kind == "tar.gz" else make_zip)(archives / f"full.{kind}", photos)
    cut = archives / f"cut.{kind}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size * 2 // 3])
    with pytest.raises(PetprobeError, match="damaged or unreadable|neither a tar nor a zip"):
        extract(cut, target)
    assert everything_under(target) == []


def test_member_listed_twice_or_clashing_with_a_file_is_an_error_and_leaves_nothing(sandbox):
    archives, target, _ = sandbox
    twice = make_tar(archives / "twice.tar.gz", [GOOD, ("ok/photo.jpg", b"a second, different photo")])
    with pytest.raises(PetprobeError, match="member ok/photo.jpg is listed twice"):
        extract(twice, target)
    clash = make_zip(archives / "clash.zip", [("ok", b"a file"), ("ok/photo.jpg", b"needs ok/ to be a folder")])
    with pytest.raises(PetprobeError, match="cannot write .*ok/photo.jpg: Not a directory"):
        extract(clash, target)
    assert everything_under(target) == []


def zip_with_central_directory_patch(path: Path, *, flag: int = 0, method: int | None = None) -> Path:
    make_zip(path, [GOOD])
    data = bytearray(path.read_bytes())
    entry = data.find(b"PK\x01\x02")
    data[entry + 8] |= flag  # general purpose flag bit 0: encrypted
    if method is not None:
        data[entry + 10:entry + 12] = method.to_bytes(2, "little")
    path.write_bytes(bytes(data))
    return path


def test_every_kind_of_archive_error_is_one_line_saying_to_download_again(sandbox):
    archives, target, _ = sandbox
    nul = archives / "nul.tar.gz"
    with tarfile.open(nul, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("ok/photo.jpg")
        info.size, info.pax_headers = 3, {"path": "ok/a\0b.jpg"}
        tar.addfile(info, io.BytesIO(b"abc"))
    cases = {
        "encrypted": (zip_with_central_directory_patch(archives / "enc.zip", flag=1),
                      "cannot be unpacked (RuntimeError: File .* is encrypted"),
        "compression": (zip_with_central_directory_patch(archives / "aes.zip", method=99),
                        "cannot be unpacked (NotImplementedError: That compression method is not supported)"),
        "NUL": (nul, "refusing member with a NUL byte in its name"),
    }
    for case, (archive, message) in cases.items():
        with pytest.raises(PetprobeError) as err:
            extract(archive, target)
        assert re.search(re.escape(message).replace(r"\.\*", ".*"), str(err.value)), (case, str(err.value))
        assert "\n" not in str(err.value) and re.search(r"delete .* and download (it )?again$", str(err.value)), case
        assert everything_under(target) == []


def test_member_name_that_is_not_utf8_is_left_out_and_recorded(sandbox):
    archives, target, _ = sandbox
    archive = make_tar(archives / "latin1.tar.gz", [GOOD, ("ok/caf\udce9.jpg", b"\xff\xd8bytes")])
    skipped: list[dict] = []
    assert extract(archive, target, skipped=skipped) == 1
    assert everything_under(target) == ["ok", "ok/photo.jpg"]
    assert skipped == [{"path": "ok/caf\\xe9.jpg", "reason": "file name is not valid UTF-8"}]


def test_not_an_archive_is_a_clear_error(sandbox):
    archives, target, _ = sandbox
    for name, data in (("page.html", b"<html>Access denied</html>"), ("empty.zip", b"")):
        (archives / name).write_bytes(data)
        with pytest.raises(PetprobeError, match="neither a tar nor a zip archive"):
            extract(archives / name, target)


# --- the download stage's official path, end to end against the local server ----------------------


@pytest.fixture(scope="module")
def pets_archives(tmp_path_factory) -> dict[str, bytes]:
    """images.tar.gz and annotations.tar.gz in the official layout, from 12 real sample images."""
    listed = {line.split()[0] for name in ("trainval.txt", "test.txt")
              for line in (PETS / "annotations" / name).read_text().splitlines() if line.split()[:1]}
    images = [p for p in sorted((PETS / "images").glob("*.jpg")) if p.stem in listed][:12]  # not the unlisted quirks
    stems = {p.stem for p in images}
    lists = {name: "".join(line + "\n" for line in (PETS / "annotations" / name).read_text().splitlines()
                           if line.split()[:1] and line.split()[0] in stems)
             for name in ("trainval.txt", "test.txt")}
    out = {}
    for name, members in (("images.tar.gz", [(f"images/{p.name}", p.read_bytes()) for p in images]),
                          ("annotations.tar.gz", [(f"annotations/{k}", v.encode()) for k, v in lists.items()])):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for member in members:
                add_tar_member(tar, *member)
        out[name] = buf.getvalue()
    return out


def pets_spec(server, archives: dict[str, bytes], **behaviour):
    """The built-in pets spec with its archives served by the local server (checksums as published)."""
    served = tuple(Archive(server.add(name, data, **behaviour.get(name, {})), name, md5(data))
                   for name, data in archives.items())
    return dataclasses.replace(BUILTIN_DATASETS["pets"], archives=served)


def test_official_source_populates_the_raw_folder_through_a_flaky_connection(server, pets_archives, tmp_path):
    spec = pets_spec(server, pets_archives, **{"images.tar.gz": {"mode": "drop", "plan": [40_000, 40_000]}})
    raw = tmp_path / "raw" / "pets"
    with atomic_dir(raw) as tmp:
        record = populate(spec, "official", tmp_path / "no-mirror", tmp, downloads=tmp_path / "downloads")
    assert record["files"] == 14 and [a["md5"] == a["md5_published"] for a in record["archives"]] == [True, True]
    assert record["tree_sha256"] == tree_digest(raw)[2]
    for path in (raw / "images").iterdir():
        assert path.read_bytes() == (PETS / "images" / path.name).read_bytes()
    candidates, classes = spec.list_candidates(raw)
    assert len(candidates) == 12 and all(c.problem is None for c in candidates) and classes
    assert sorted(p.name for p in (tmp_path / "downloads").iterdir()) == ["annotations.tar.gz", "images.tar.gz"]
    assert any(r == "bytes=40000-" for _, r in server.requests)


@pytest.mark.parametrize("fault", ["checksum", "escaping member"])
def test_official_source_fault_leaves_no_raw_folder(server, pets_archives, tmp_path, fault):
    archives = dict(pets_archives)
    behaviour = {}
    if fault == "checksum":
        behaviour = {"annotations.tar.gz": {"mode": "wrong"}}
    else:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            add_tar_member(tar, "annotations/trainval.txt", b"x 1 1 1\n")
            add_tar_member(tar, "annotations/../../../outside.txt", b"pwned")
        archives["annotations.tar.gz"] = buf.getvalue()
    spec = pets_spec(server, archives, **behaviour)
    raw = tmp_path / "data" / "raw" / "pets"
    with pytest.raises(PetprobeError, match="checksum mismatch|refusing member that escapes"):
        with atomic_dir(raw) as tmp:
            populate(spec, "official", tmp_path / "no-mirror", tmp, downloads=tmp_path / "downloads")
    assert leftovers(raw.parent) == []  # no raw/pets, no .tmp-pets.* with half the images
    assert not (tmp_path / "outside.txt").exists() and not any(tmp_path.rglob("outside.txt"))
