"""Getting a dataset's official archive: its URLs in order, held to its published or pinned checksum.

``fetch_archive`` tries an archive's URLs in order (the current host first, retired ones after)
and holds the download to the archive's pins, recording them at the first download where nothing
is published. Each URL is fetched with ``petprobe.fetch``; unpacking is ``data.unpack``, copying a
local mirror instead is ``data.mirror``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from petprobe.artefacts import DOWNLOAD_PINS
from petprobe.data.filenames import printable_name
from petprobe.errors import PetprobeError, one_line
from petprobe.fetch import FetchResult, fetch
from petprobe.outputs import write_json

if TYPE_CHECKING:
    from petprobe.data.datasets import Archive

__all__ = ["fetch_archive", "MIRROR_HINT"]

# What a failed dataset download tells the user to do instead.
MIRROR_HINT = ("Without internet, set data.source: mirror and data.mirror: <folder laid out like the extracted "
               "archives> in params.yaml (or data.source: sample for a quick run on petprobe's embedded mini-sample)")


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
