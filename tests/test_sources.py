"""Official archives: URLs tried in order (current host first), pinned size/sha256 held, and an
archive without a published checksum pinned at its first download and refused when it changes.

A real HTTP server on 127.0.0.1 (http.server in a thread) serves real sample photos.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import PETS
from petprobe.artefacts import DOWNLOAD_PINS
from petprobe.data.archives import fetch_archive
from petprobe.data.datasets import BUILTIN_DATASETS, Archive
from petprobe.errors import PetprobeError

pytestmark = pytest.mark.unit

QUICK = {"progress": False, "timeout": 5.0, "backoff": 0.01, "attempts": 2}


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def host(tmp_path, monkeypatch):
    """(folder served, base URL): files put in the folder are served; anything else is a 404."""
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    served = tmp_path / "served"
    served.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(served)))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def photos() -> bytes:
    data = b"".join(p.read_bytes() for p in sorted((PETS / "images").glob("*.jpg"))[:20])
    assert len(data) > 200_000
    return data


def test_retired_host_is_skipped_and_the_next_url_gives_the_file(host, photos, tmp_path):
    served, base = host
    (served / "new").mkdir()
    (served / "new" / "a.tar.gz").write_bytes(photos)
    (served / "wrong").mkdir()
    (served / "wrong" / "a.tar.gz").write_bytes(photos[::-1])  # a host serving other bytes
    archive = Archive(f"{base}/retired/a.tar.gz", "a.tar.gz", hashlib.md5(photos).hexdigest(),
                      fallbacks=(f"{base}/wrong/a.tar.gz", f"{base}/new/a.tar.gz"))
    got, url = fetch_archive(archive, tmp_path / "downloads", **QUICK)
    assert url == f"{base}/new/a.tar.gz"
    assert got.path.read_bytes() == photos and got.md5_verified
    assert sorted(p.name for p in (tmp_path / "downloads").iterdir()) == ["a.tar.gz"]  # no pins, no parts


def test_no_url_working_is_one_error_naming_each_url(host, photos, tmp_path):
    _, base = host
    archive = Archive(f"{base}/x/a.zip", "a.zip", "0" * 32, fallbacks=(f"{base}/y/a.zip",))
    with pytest.raises(PetprobeError) as err:
        fetch_archive(archive, tmp_path / "downloads", **QUICK)
    message = str(err.value)
    assert "any of its 2 URLs" in message and f"{base}/x/a.zip" in message and f"{base}/y/a.zip" in message
    assert "\n" not in message


def test_pinned_size_catches_a_truncated_archive_before_unpacking(host, photos, tmp_path):
    served, base = host
    (served / "a.zip").write_bytes(photos[:-1000])  # cut short, as a broken mirror would serve it
    archive = Archive(f"{base}/a.zip", "a.zip", size=len(photos))
    with pytest.raises(PetprobeError, match=rf"{len(photos) - 1000} of {len(photos)} bytes \(the pinned size\)"):
        fetch_archive(archive, tmp_path / "downloads", **QUICK)
    # never promoted: at most the partial file stays, for a resume from a host that has it whole
    assert [p.name for p in (tmp_path / "downloads").iterdir()] in ([], ["a.zip.part"])


def test_pinned_sha256_refuses_a_replaced_archive(host, photos, tmp_path):
    served, base = host
    (served / "a.zip").write_bytes(photos[::-1])
    archive = Archive(f"{base}/a.zip", "a.zip", sha256=hashlib.sha256(photos).hexdigest())
    with pytest.raises(PetprobeError, match="checksum mismatch"):
        fetch_archive(archive, tmp_path / "downloads", **QUICK)
    (served / "a.zip").write_bytes(photos)
    got, _ = fetch_archive(archive, tmp_path / "downloads", **QUICK)
    assert got.sha256 == hashlib.sha256(photos).hexdigest()


def test_unpublished_checksum_is_recorded_at_first_download_and_a_changed_archive_refused(host, photos, tmp_path):
    served, base = host
    downloads = tmp_path / "downloads"
    (served / "a.zip").write_bytes(photos)
    archive = Archive(f"{base}/a.zip", "a.zip")
    got, _ = fetch_archive(archive, downloads, **QUICK)
    pins = json.loads((downloads / DOWNLOAD_PINS).read_text())
    assert pins["a.zip"]["sha256"] == hashlib.sha256(photos).hexdigest() == got.sha256
    assert pins["a.zip"]["bytes"] == len(photos)

    # The publisher replaces the file with one of the same size: the recorded sha256 refuses it.
    got.path.unlink()
    changed = bytearray(photos)
    changed[1000] ^= 0xFF
    (served / "a.zip").write_bytes(bytes(changed))
    with pytest.raises(PetprobeError, match=f"recorded at the first download in .*{DOWNLOAD_PINS}"):
        fetch_archive(archive, downloads, **QUICK)
    assert sorted(p.name for p in downloads.iterdir()) == [DOWNLOAD_PINS]
    assert json.loads((downloads / DOWNLOAD_PINS).read_text()) == pins  # the pin is not overwritten

    # The original file again: accepted, and the kept archive is not downloaded a second time.
    (served / "a.zip").write_bytes(photos)
    got, _ = fetch_archive(archive, downloads, **QUICK)
    assert got.path.read_bytes() == photos


def test_builtin_sources_put_todays_host_first_and_pin_the_microsoft_archive():
    pets = BUILTIN_DATASETS["pets"].archives
    for archive in pets:
        assert archive.urls[0].startswith("https://thor.robots.ox.ac.uk/")
        assert archive.urls[-1].startswith("https://www.robots.ox.ac.uk/~vgg/data/pets/data/")  # retired, last
        assert len(archive.md5) == 32 and all(Path(u).name == archive.filename for u in archive.urls)
    (catsdogs,) = BUILTIN_DATASETS["catsdogs"].archives
    assert catsdogs.size == 824_887_076 and catsdogs.md5 is None
