"""The one row per dataset of `dvc metrics show`: copied numbers, one declared metric file."""

from __future__ import annotations

import pytest
import yaml

from conftest import REPO
from petprobe.reporting.headline import dataset_headline

pytestmark = pytest.mark.unit

LOGREG = {"n_test": 57, "top1": 0.929825, "balanced_accuracy": 0.945513, "log_loss": 0.367751, "ece": 0.14921,
          "top1_ci95": [0.832998, 0.972374]}
HEAD = {"n_test": 57, "top1": 0.912281, "balanced_accuracy": 0.940883, "log_loss": 0.268188, "ece": 0.078228}
KNN = {"n_test": 57, "top1": 0.894737, "balanced_accuracy": 0.91, "log_loss": 0.4, "ece": 0.05}


def test_the_row_copies_each_heads_accuracies_and_every_other_stages_numbers():
    row = dataset_headline({"logreg": LOGREG, "head": HEAD, "knn": KNN}, {"pgd4_success": 1.0, "pgd4_transfer": 0.0},
                           {"cam_del_gain": 0.1447}, {"test_twins": 0})
    assert row == {"n_test": 57, "logreg_top1": 0.929825, "head_top1": 0.912281, "knn_top1": 0.894737,
                   "pgd4_success": 1.0, "pgd4_transfer": 0.0, "cam_del_gain": 0.1447, "test_twins": 0}


@pytest.mark.parametrize("heads, others, match", [
    ({"logreg": LOGREG, "head": {**HEAD, "n_test": 56}}, (), "different test sets"),
    ({"logreg": LOGREG}, ({"test_twins": 0}, {"test_twins": 1}), "test_twins written by two stages"),
    ({"logreg": LOGREG}, ({"logreg_top1": 0.5},), "logreg_top1 written by two stages"),
])
def test_disagreeing_or_clashing_inputs_are_refused(heads, others, match):
    with pytest.raises(ValueError, match=match):
        dataset_headline(heads, *others)


def test_dvc_yaml_declares_one_metric_file_per_dataset_and_the_headline_reads_every_part():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    declared = {name: [next(iter(m)) if isinstance(m, dict) else m for m in (s.get("do", s).get("metrics") or [])]
                for name, s in stages.items()}
    assert {name: files for name, files in declared.items() if files} == {"headline": ["metrics/${item}/headline.json"]}
    deps = stages["headline"]["do"]["deps"]
    outs = {next(iter(o)) if isinstance(o, dict) else o for s in stages.values() for o in s.get("do", s).get("outs", [])}
    parts = ["metrics/${item}/logreg/headline.json", "metrics/${item}/head/headline.json", "metrics/${item}/knn/headline.json",
             "metrics/${item}/render_headline.json", "metrics/${item}/explain_headline.json",
             "metrics/${item}/near_twins.json"]
    assert all(part in deps and part in outs for part in parts)
