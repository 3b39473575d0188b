"""Open an HTML file in headless Chromium with the network cut off: a screenshot and the console.

Used by tests/test_report.py and by CI on the pipeline's real page:
    python -m tests.browser data/report/index.html
prints the console lines and exits 1 when the console has any line or the screenshot is blank.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["chromium", "open_offline", "blank"]

# Chromium logs the page's console (and CSP refusals) to stderr with --enable-logging=stderr, as
# `...:INFO:CONSOLE:1] "message", source: ...` (older versions: `CONSOLE(1)]`).
_CONSOLE = re.compile(r":(INFO|WARNING|ERROR|FATAL):CONSOLE[:(]\d+\)?\] (.*)")


def chromium() -> str | None:
    """The Chromium executable (Debian's `chromium` package), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if found := shutil.which(name):
            return found
    return None


def open_offline(page: Path, screenshot: Path, *, width: int = 1280, height: int = 2400) -> list[str]:
    """Load ``page`` from file:// with every network request refused; write ``screenshot``; return console lines.

    The network is cut by a proxy that does not exist (127.0.0.1:9, loopback included), so any
    http(s) load fails and shows up in the console instead of quietly succeeding.
    """
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("chromium is not installed (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="petprobe-chromium-") as profile:
        command = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                   "--no-first-run", "--disable-extensions", "--disable-background-networking",
                   f"--user-data-dir={profile}", "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
                   "--enable-logging=stderr", "--v=0", "--hide-scrollbars", "--virtual-time-budget=5000",
                   f"--window-size={width},{height}", f"--screenshot={screenshot}", page.resolve().as_uri()]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if not screenshot.is_file():
        raise RuntimeError(f"chromium wrote no screenshot (exit {done.returncode}): {done.stderr[-2000:]}")
    return [m.group(0) for m in map(_CONSOLE.search, done.stderr.splitlines()) if m]


def blank(screenshot: Path) -> bool:
    """True when the screenshot is (nearly) one colour: nothing was drawn."""
    pixels = np.asarray(Image.open(screenshot).convert("L"), dtype=np.float32)
    return float(pixels.std()) < 2.0


if __name__ == "__main__":
    page = Path(sys.argv[1])
    shot = Path(sys.argv[2]) if len(sys.argv) > 2 else page.with_suffix(".png")
    # A full-page screenshot: a window taller than the page (the sample's is about 22,000 px), cropped to what was drawn.
    console = open_offline(page, shot, height=32000)
    ink = np.where(np.asarray(Image.open(shot).convert("L")).min(axis=1) < 250)[0]
    if ink.size:
        Image.open(shot).crop((0, 0, Image.open(shot).size[0], min(int(ink.max()) + 40, 32000))).save(shot)
    print("\n".join(console) or "console: empty")
    problems = list(console)  # the page has no script: any console line is a refusal or an error
    if blank(shot):
        problems.append(f"{shot}: blank screenshot")
    print(f"{page}: screenshot {shot} ({Image.open(shot).size[0]}x{Image.open(shot).size[1]}), "
          f"{len(problems)} problem(s)")
    sys.exit(1 if problems else 0)
