"""End to end: `dvc repro` on a small capped sample in a temporary copy of the repo."""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from conftest import DATASETS, copy_repo, make_quick

# The whole pipeline in a copy of the repo: minutes. `python -m pytest -m unit` leaves it out.
pytestmark = pytest.mark.e2e


def run(cmd, cwd, env):
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def small_repo(tmp_path_factory):
    """A copy of the repo whose params point at the sample with 4 images per class, reproduced once."""
    repo = copy_repo(tmp_path_factory.mktemp("repo"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["mirror"] = str(DATASETS)
    params["data"]["max_per_class"] = 4
    make_quick(params)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / "dvc.lock").unlink(missing_ok=True)
    env = dict(os.environ, DVC_NO_ANALYTICS="1", DVC_SITE_CACHE_DIR=str(tmp_path_factory.mktemp("site")))
    run(["git", "init", "-q"], repo, env)
    run([sys.executable, "-m", "dvc", "repro"], repo, env)
    return repo, env


def test_repro_writes_metrics_for_both_datasets(small_repo):
    repo, _ = small_repo
    for ds in ("pets", "catsdogs"):
        metrics = json.loads((repo / "metrics" / f"{ds}.json").read_text())
        assert metrics["n_test"] > 0
        assert 0.0 <= metrics["logreg"]["top1"] <= 1.0
        assert ("top3" in metrics["logreg"]) == (ds == "pets")
        row = json.loads((repo / "metrics" / ds / "headline.json").read_text())  # `dvc metrics show`'s row
        assert (row["n_test"], row["logreg_top1"], row["knn_top1"]) == (
            metrics["n_test"], metrics["logreg"]["top1"], metrics["knn"]["top1"])
        manifest = pd.read_csv(repo / "data/prepared" / ds / "manifest.csv")
        assert manifest.groupby(["split", "label"]).size().max() <= 4
        meta = json.loads((repo / "data/embeddings" / ds / "meta.json").read_text())
        assert meta["backbone"] == "efficientnet_lite0" and meta["weights"]["sha256"].startswith("5793442")


def test_broken_files_are_listed_and_raw_is_byte_identical_to_the_mirror(small_repo):
    repo, _ = small_repo
    rejected = pd.read_csv(repo / "data/prepared/catsdogs/rejected.csv")
    reasons = dict(zip(rejected.path, rejected.reason))
    raw = "data/raw/catsdogs/PetImages"
    assert reasons[f"{raw}/Cat/666.jpg"] == "empty file (0 bytes)"
    assert reasons[f"{raw}/Dog/11702.jpg"].startswith("corrupt or truncated image")
    assert reasons[f"{raw}/Cat/Thumbs.db"] == reasons[f"{raw}/Dog/Thumbs.db"] == "not an image (unrecognised format)"
    assert len(reasons) == 4
    compare = filecmp.dircmp(DATASETS / "PetImages", repo / raw)
    for sub in ("Cat", "Dog"):
        names = sorted(os.listdir(DATASETS / "PetImages" / sub))
        match, mismatch, errors = filecmp.cmpfiles(DATASETS / "PetImages" / sub, repo / raw / sub, names, shallow=False)
        assert (len(match), mismatch, errors) == (len(names), [], [])
    assert compare.left_only == compare.right_only == []


def test_second_repro_has_nothing_to_do(small_repo):
    repo, env = small_repo
    out = run([sys.executable, "-m", "dvc", "repro"], repo, env).stdout
    assert "Running stage" not in out
    status = run([sys.executable, "-m", "dvc", "status"], repo, env).stdout
    assert "Data and pipelines are up to date" in status
