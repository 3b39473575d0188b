"""The contributor's checks hold: ruff passes, and no test escapes the tiers."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.integration


def test_ruff_check_passes():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "petprobe", "stages", "benchmarks",
                           "tests", ".ci"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_a_test_without_a_tier_or_with_two_stops_the_collection(tmp_path):
    tests = tmp_path / "tests"
    tests.mkdir()
    for name in ("conftest.py", "repo_copy.py"):
        shutil.copyfile(REPO / "tests" / name, tests / name)
    shutil.copyfile(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    (tests / "test_x.py").write_text(
        "import pytest\n\n"
        "def test_forgot():\n    pass\n\n"
        "@pytest.mark.unit\n@pytest.mark.e2e\ndef test_both():\n    pass\n\n"
        "@pytest.mark.integration\ndef test_fine():\n    pass\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert "tests/test_x.py::test_forgot: no tier" in done.stderr
    assert "tests/test_x.py::test_both: e2e, unit" in done.stderr
    assert "test_fine" not in done.stderr
