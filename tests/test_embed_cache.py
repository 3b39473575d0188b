"""No needless work: DVC never recomputes embeddings it already has (end to end, real dvc)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import pytest
import yaml

from conftest import copy_repo, make_quick, photo_folder

pytestmark = pytest.mark.e2e


def dvc(repo, *args) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(repo.parent / "site-cache")}
    done = subprocess.run(["dvc", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    return output


def git(repo, *args) -> None:
    subprocess.run(["git", "-c", "user.name=petprobe", "-c", "user.email=petprobe@example.invalid", *args],
                   cwd=repo, check=True, capture_output=True)


def test_logreg_params_never_reembed_and_a_backbone_switched_back_is_a_run_cache_hit(tmp_path):
    # A tiny dataset of real photos (8 cats, 8 dogs) through the real pipeline, in a copy of the repo.
    folder = photo_folder(tmp_path / "tiny", per_class=8)
    repo = copy_repo(tmp_path / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params.update(datasets=["tiny"], imagefolders={"tiny": str(folder)})
    params["embed"]["num_workers"] = 0
    make_quick(params)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "tiny")

    # Each run targets the stage its check is about; DVC still decides, as in a full run, whether
    # embed (upstream of it) must rerun. The stages further down are test_pipeline.py's to check,
    # and leaving them out here takes this test from about 270 s to about 40 s on 2 cores.
    out = dvc(repo, "repro", "train_logreg@tiny")
    assert "embed@tiny: 16 images with efficientnet_lite0" in out
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "run")
    train = repo / "data" / "embeddings" / "tiny" / "train.npy"
    first = hashlib.sha256(train.read_bytes()).hexdigest()

    # A head parameter: the logistic regression reruns; embed is checked, unchanged, and skipped.
    out = dvc(repo, "exp", "run", "-S", "logreg.c_max=5", "train_logreg@tiny")
    assert "Running stage 'train_logreg@tiny'" in out
    assert "Stage 'embed@tiny' didn't change, skipping" in out and "embed@tiny:" not in out  # 0 images embedded

    # Backbone A -> B -> A: B embeds, the second A is restored from DVC's run-cache, not recomputed.
    out = dvc(repo, "exp", "run", "-S", "backbone=mobilenet_v2", "embed@tiny")
    assert "embed@tiny: 16 images with mobilenet_v2" in out
    assert json.loads((train.parent / "meta.json").read_text())["backbone"] == "mobilenet_v2"
    out = dvc(repo, "exp", "run", "-S", "backbone=efficientnet_lite0", "embed@tiny")
    assert "Stage 'embed@tiny' is cached - skipping run, checking out outputs" in out
    assert "embed@tiny:" not in out
    assert hashlib.sha256(train.read_bytes()).hexdigest() == first
