"""The kNN probe, seeds, calibration and few-shot curves through the real pipeline, never a cause to re-embed."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from conftest import git_commit, run_in, tiny_experiment_repo

pytestmark = pytest.mark.e2e


def test_knn_is_evaluated_and_predicts_and_its_params_never_reembed(tmp_path):
    repo = tiny_experiment_repo(tmp_path, head={"max_epochs": 5, "patience": 2, "spread_seeds": [1]},
                                fewshot={"shots": [1, 2, 0], "draws": 2})

    run_in(repo, sys.executable, "-m", "dvc", "repro", "evaluate@tiny", "fewshot@tiny")
    summary = json.loads((repo / "metrics" / "tiny.json").read_text())
    headline = json.loads((repo / "metrics" / "tiny" / "knn" / "headline.json").read_text())
    assert set(summary["knn"]) == set(summary["head"]) - {"seeds", "calibration"}
    assert headline["top1"] == summary["knn"]["top1"]
    seeds, calibration = summary["head"]["seeds"], summary["head"]["calibration"]
    assert seeds["n_seeds"] == 2 and seeds["top1"]["per_seed"][0] == summary["head"]["top1"]  # the saved model first
    assert calibration["ece_calibrated"] == summary["head"]["ece"] and calibration["temperature"] > 0
    assert (repo / "metrics" / "tiny" / "head" / "reliability.png").stat().st_size > 0
    fewshot = json.loads((repo / "metrics" / "tiny" / "fewshot.json").read_text())
    assert len(fewshot["rows"]) == 2 * (2 * 2 + 1)  # probes x (k x draws + all)
    manifest = pd.read_csv(repo / "data" / "prepared" / "tiny" / "manifest.csv")
    photo = manifest[manifest.split == "train"].iloc[0]
    done = subprocess.run([sys.executable, "-m", "petprobe", "predict", "--dataset", "tiny", "--model", "knn", "--json",
                           photo.path], cwd=repo, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # A training photo is its own nearest neighbour (similarity 1, weight e^(1/T)): its class wins.
    assert json.loads(done.stdout)[0]["predictions"][0]["class"] == photo.label
    git_commit(repo, "run")

    out = run_in(repo, sys.executable, "-m", "dvc", "exp", "run", "-S", "fewshot.draws=3", "fewshot@tiny")
    assert "Running stage 'fewshot@tiny'" in out and "Stage 'embed@tiny' didn't change, skipping" in out
    assert "embed@tiny:" not in out and "Running stage 'train_logreg@tiny'" not in out
    assert len(json.loads((repo / "metrics" / "tiny" / "fewshot.json").read_text())["rows"]) == 2 * (2 * 3 + 1)

    out = run_in(repo, sys.executable, "-m", "dvc", "exp", "run", "-S", "knn.k=3", "evaluate@tiny")
    assert "Running stage 'train_knn@tiny'" in out and "Running stage 'evaluate@tiny'" in out
    assert "Stage 'embed@tiny' didn't change, skipping" in out and "embed@tiny:" not in out
    assert "Running stage 'train_head@tiny'" not in out and "Running stage 'train_logreg@tiny'" not in out
