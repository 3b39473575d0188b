"""`petprobe study`: one DVC experiment per backbone, compared in one table; adding a backbone computes only it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import run_in, tiny_experiment_repo
from petprobe.catalogue import TRAINED
from petprobe.reporting.report import Readouts, render_page
from petprobe.reporting.study import StudyRun, experiment_name, study_experiments, study_table
from petprobe.reporting.study_files import STUDY_FIGURES, read_written_study, study_figure, write_study

# The shape `dvc exp show --json` (DVC 3.67) gives: the workspace, then the baseline commit with its
# experiments (trimmed to the fields read; one experiment that failed, one that is no study).
SHOW = [
    {"rev": "workspace", "name": None, "data": {"params": {"params.yaml": {"data": {"backbone": "efficientnet_lite0"}}}}},
    {"rev": "f930258", "name": "master", "data": {}, "error": None, "experiments": [
        {"name": "study-mobilenet_v2", "executor": None, "revs": [
            {"rev": "ddda21c", "name": "study-mobilenet_v2", "error": None, "experiments": None,
             "data": {"params": {"params.yaml": {"data": {"backbone": "mobilenet_v2", "datasets": ["tiny"]}}},
                      "metrics": {"metrics/tiny/headline.json": {"data": {"logreg_top1": 0.75}}}}}]},
        {"name": "study-timm-convnext_tiny-fb_in22k", "executor": None, "revs": [
            {"rev": "0a1b2c3", "name": "study-timm-convnext_tiny-fb_in22k", "error": {"msg": "failed"},
             "data": {}}]},
        {"name": "lr-sweep", "executor": None, "revs": [
            {"rev": "9f8e7d6", "name": "lr-sweep", "error": None,
             "data": {"params": {"params.yaml": {"data": {"backbone": "efficientnet_lite0"}}}}}]},
    ]},
    {"rev": "older", "name": "HEAD~1", "data": {}, "experiments": [
        {"name": "study-vgg16", "revs": [{"rev": "5555555", "name": "study-vgg16", "error": None, "data": {}}]}]},
]

METRICS = {"n_test": 4, "n_rejected": 0,
           "logreg": {"top1": 0.75, "top1_ci95": [0.300642, 0.954413], "balanced_accuracy": 0.7,
                      "balanced_accuracy_ci95": [0.25, 0.95], "log_loss": 0.49332, "ece": 0.339825, "C": 0.01},
           "head": {"top1": 0.5, "top1_ci95": [0.15, 0.85], "balanced_accuracy": 0.5,
                    "balanced_accuracy_ci95": [0.15, 0.85], "log_loss": 0.74, "ece": 0.29}}


@pytest.mark.unit
def test_experiment_names_are_git_ref_names():
    assert experiment_name("mobilenet_v2") == "study-mobilenet_v2"
    assert experiment_name("timm/convnext_tiny.fb_in22k") == "study-timm-convnext_tiny-fb_in22k"


@pytest.mark.unit
def test_only_the_current_commits_finished_study_experiments_are_read():
    runs = study_experiments(SHOW)
    assert runs == [StudyRun("study-mobilenet_v2", "ddda21c", "mobilenet_v2", ("tiny",))]


@pytest.mark.unit
def test_the_table_copies_each_heads_metrics_and_the_registrys_facts():
    run = StudyRun("study-efficientnet_lite0", "abc", "efficientnet_lite0", ("tiny",), {"tiny": METRICS})
    table = study_table([run], {"efficientnet_lite0": 40.0})
    assert list(table.probe) == ["logreg", "head"]  # per dataset, heads in the registry's order
    row = table.iloc[0].to_dict()
    assert (row["top1"], row["top1_lo"], row["top1_hi"]) == (0.75, 0.300642, 0.954413)
    assert (row["bacc"], row["bacc_lo"], row["bacc_hi"], row["log_loss"], row["ece"]) == (0.7, 0.25, 0.95, 0.49332,
                                                                                          0.339825)
    assert (row["n_test"], row["imagenet_acc1"], row["img_per_s"]) == (4, 75.1, 40.0)
    assert row["params_m"] == pytest.approx(4.652008)
    no_acc = study_table([StudyRun("study-mobilenet_v2", "d", "mobilenet_v2", ("tiny",), {"tiny": METRICS})])
    assert np.isnan(no_acc.imagenet_acc1).all() and np.isnan(no_acc.img_per_s).all()
    axes = study_figure(table, "imagenet_acc1").axes[0]
    assert len(axes.containers) == 1  # one dataset: one errorbar series, the logreg row
    assert axes.get_xlabel().startswith("ImageNet-1k top-1")


def _seed_hub_cache(cache, model: str) -> None:
    """A random-init timm model's weights where the Hugging Face hub cache keeps a download of
    ``timm/<model>`` (refs/main names the snapshot): what a user's first online run leaves behind."""
    from safetensors.torch import save_file

    timm = pytest.importorskip("timm")
    repo = cache / f"models--timm--{model}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    torch_state = timm.create_model(model, pretrained=False).state_dict()
    save_file({k: v.contiguous() for k, v in torch_state.items()}, repo / "snapshots" / ("0" * 40) / "model.safetensors")


@pytest.mark.e2e
def test_a_study_rerun_after_adding_a_backbone_embeds_only_that_one(tmp_path):
    repo = tiny_experiment_repo(tmp_path, head={"max_epochs": 5, "patience": 2, "spread_seeds": [1]})
    # The third backbone: timm's smallest ResNet, random-init weights in a private hub cache, offline.
    hub = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    _seed_hub_cache(tmp_path / "hub", "test_resnet.r160_in1k")

    out = run_in(repo, "petprobe", "study", "efficientnet_lite0", "mobilenet_v2", "--throughput-images", "4", env=hub,
                 timeout=1200)
    assert "embed@tiny: 16 images with efficientnet_lite0" in out and "embed@tiny: 16 images with mobilenet_v2" in out

    third = "timm/test_resnet.r160_in1k"
    out = run_in(repo, "petprobe", "study", "efficientnet_lite0", "mobilenet_v2", third, "--throughput-images", "4",
                 env=hub, timeout=1200)
    assert f"embed@tiny: 16 images with {third}" in out
    assert out.count("embed@tiny: 16 images with") == 1  # only the new backbone's embeddings are computed
    assert "already done at this commit: efficientnet_lite0, mobilenet_v2" in out
    table = pd.read_csv(repo / "metrics/study/study.csv")
    assert sorted(table.backbone.unique()) == ["efficientnet_lite0", "mobilenet_v2", third]
    assert (table.groupby("backbone").size() == len(TRAINED)).all()  # every trained head of each backbone
    for name in ("study.md", *STUDY_FIGURES):
        assert (repo / "metrics/study" / name).stat().st_size > 0


@pytest.mark.unit
def test_the_report_page_shows_the_written_study_and_says_when_it_is_from_other_data(tmp_path):
    runs = [StudyRun(f"study-{b}", "abc", b, ("tiny",), {"tiny": METRICS}) for b in ("efficientnet_lite0", "mobilenet_v2")]
    table = study_table(runs, {"efficientnet_lite0": 40.0, "mobilenet_v2": 61.5})
    written = write_study(table, tmp_path / "metrics" / "study", n_photos=4)
    assert [p.name for p in written] == ["study.csv", "study.md", *STUDY_FIGURES]
    read, figures = read_written_study(tmp_path / "metrics" / "study")
    assert read.drop(columns="experiment").equals(table.drop(columns="experiment"))  # the csv round-trips exactly
    assert set(figures) == set(STUDY_FIGURES)

    page = render_page(Readouts(summaries={"metrics/tiny.json": {"n_test": 4}}, study=read, study_figures=figures,
                                provenance={"params": {"backbone": "mobilenet_v2"}}), title="t")
    section = page.split("<h2 id=study>")[1].split("<h2")[0]
    assert "0.750 <small>[0.301, 0.954]</small>" in section and "61.5" in section and "75.1" in section
    assert section.count("<tr>") == 1 + 4  # the header, then 2 backbones x 2 heads
    assert "mobilenet_v2 <small>(this page)</small>" in section
    assert section.count("<img") == 2 and "other data" not in section
    stale = render_page(Readouts(summaries={"metrics/tiny.json": {"n_test": 57}}, study=read), title="t")
    assert "run on other data (tiny: 4 test images in the study, 57 in the metrics of this page)" in stale
    assert "Backbone study" not in render_page(Readouts(summaries={"metrics/tiny.json": {"n_test": 4}}), title="t")
