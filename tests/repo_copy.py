"""A fresh copy of the working tree: the tests' repo copies and the benchmarks' work copies.

Used by tests/conftest.py (``copy_repo``) and benchmarks/scale.py and gpu_check.py (which put
tests/ on sys.path, as hostile_inputs.py does for hostile_files.py).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def copy_repo(dest: Path) -> Path:
    """The tracked and untracked-but-not-ignored files (what a commit would hold; no data/), copied to ``dest``."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest
