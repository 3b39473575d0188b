"""No needless work: DVC never recomputes embeddings it already has (end to end, real dvc)."""

from __future__ import annotations

import hashlib
import json

import pytest

from conftest import git_commit, run_in, tiny_experiment_repo

pytestmark = pytest.mark.e2e


def test_logreg_params_never_reembed_and_a_backbone_switched_back_is_a_run_cache_hit(tmp_path):
    repo = tiny_experiment_repo(tmp_path)  # 8 real cats and 8 dogs through the real pipeline

    # Each run targets the stage its check is about; DVC still decides, as in a full run, whether
    # embed (upstream of it) must rerun. The stages further down are test_pipeline.py's to check,
    # and leaving them out here takes this test from about 270 s to about 40 s on 2 cores.
    out = run_in(repo, "dvc", "repro", "train_logreg@tiny")
    assert "embed@tiny: 16 images with efficientnet_lite0" in out
    git_commit(repo, "run")
    train = repo / "data" / "embeddings" / "tiny" / "train.npy"
    first = hashlib.sha256(train.read_bytes()).hexdigest()

    # A head parameter: the logistic regression reruns; embed is checked, unchanged, and skipped.
    out = run_in(repo, "dvc", "exp", "run", "-S", "logreg.c_max=5", "train_logreg@tiny")
    assert "Running stage 'train_logreg@tiny'" in out
    assert "Stage 'embed@tiny' didn't change, skipping" in out and "embed@tiny:" not in out  # 0 images embedded

    # Backbone A -> B -> A: B embeds, the second A is restored from DVC's run-cache, not recomputed.
    out = run_in(repo, "dvc", "exp", "run", "-S", "backbone=mobilenet_v2", "embed@tiny")
    assert "embed@tiny: 16 images with mobilenet_v2" in out
    assert json.loads((train.parent / "meta.json").read_text())["backbone"] == "mobilenet_v2"
    out = run_in(repo, "dvc", "exp", "run", "-S", "backbone=efficientnet_lite0", "embed@tiny")
    assert "Stage 'embed@tiny' is cached - skipping run, checking out outputs" in out
    assert "embed@tiny:" not in out
    assert hashlib.sha256(train.read_bytes()).hexdigest() == first
