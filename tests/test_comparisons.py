"""The optional comparison stages, switched on, on a tiny real-photo dataset in a copy of the repo.

Both run through ``heads.comparisons.train_comparison``; the test checks what they report and that
a fixed seed gives the same report twice.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import image_folder_repo

pytestmark = pytest.mark.integration


def run(repo, *args):
    result = subprocess.run([sys.executable, "-m", *args], cwd=repo, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = image_folder_repo(tmp_path_factory.mktemp("comparisons"), per_class=12, params=(
        "embed: {batch_size: 8, num_workers: 0, precision: fp32}\n"
        "logreg: {c_steps: 3}\n"
        "finetune: {enabled: true, epochs: 2, batch_size: 4}\n"
        "scratch: {enabled: true, epochs: 2, batch_size: 4, image_size: 32}\n"))
    for stage in ("download", "prepare", "embed", "train_logreg"):
        run(repo, f"stages.{stage}", "tiny")
    return repo


@pytest.mark.parametrize("stage", ["finetune", "scratch"])
def test_comparison_stage_reports_val_and_test_and_repeats_itself(repo, stage):
    out = repo / "metrics" / "tiny" / f"{stage}.json"
    run(repo, f"stages.{stage}", "tiny")
    first = json.loads(out.read_text())
    assert first["enabled"] is True and first["epochs_run"] == 2 and first["best_epoch"] in (1, 2)
    assert 0.0 <= first["val"]["top1"] <= 1.0 and first["val"]["loss"] > 0
    assert {"top1", "balanced_accuracy", "log_loss", "ece"} <= set(first["test"])
    assert ("val_before" in first) == (stage == "finetune")  # the probe's score before fine-tuning
    if stage == "finetune":
        assert first["backbone"] == "efficientnet_lite0"
        assert first["test"]["top1"] >= 0.75  # real features of cats and dogs: well above chance
    else:
        assert first["image_size"] == 32
    run(repo, f"stages.{stage}", "tiny")
    assert json.loads(out.read_text()) == first
