"""The report page's structure, charts and size, and the generated plots of dvc.yaml.

A repo copy gets an imagefolder dataset of real photos, `tiny`; dvc.yaml's plots are generated
for it and DVC's own `dvc plots show --json` draws them from small files in the formats the
stages write (C search, train/val curves, confusion table, attack curves), so the templates in
.dvc/plots are checked on what DVC really hands the report.
"""

import csv
import io
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from PIL import Image

from conftest import PETIMAGES, REPO, image_folder_repo
from petprobe.catalogue import HEADS, TRAINED
from petprobe.reporting.headline import HEAD_KEYS, head_key
from petprobe.reporting.plots import dataset_plots, plots_section, write_dvc_yaml
from petprobe.reporting.report import GLOSSARY, HEADLINE_COLUMNS, PAGE_BUDGET, Readouts, collect, render_page

pytestmark = pytest.mark.integration

SHA = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


def _write_tiny_outputs(repo):
    """Small outputs of dataset `tiny` in the formats the stages write them (values from a real run's shape)."""
    m = repo / "metrics" / "tiny"
    (m / "logreg").mkdir(parents=True)
    path = [{"log10_C": lc, "C": 10.0 ** lc, "cv_log_loss_mean": v, "cv_log_loss_sd": sd, "chosen": lc == 0.0}
            for lc, v, sd in ((-2.0, 0.69, 0.01), (-1.0, 0.40, 0.05), (0.0, 0.21, 0.06), (1.0, 0.25, 0.09))]
    (m / "logreg_search.json").write_text(json.dumps({"C": 1.0, "folds": 5, "path": path}))
    for split, losses in (("train", [0.7, 0.3, 0.1]), ("val", [0.7, 0.4, 0.35])):
        d = m / "train_head" / "plots" / "metrics" / split
        d.mkdir(parents=True)
        (d / "loss.tsv").write_text("step\tloss\n" + "".join(f"{i}\t{v}\n" for i, v in enumerate(losses, 1)))
    with (m / "logreg" / "confusion.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["actual", "predicted"])
        w.writerows([["Cat", "Cat"]] * 5 + [["Cat", "Dog"]] + [["Dog", "Dog"]] * 6)
    (m / "render_eps.json").write_text(json.dumps([
        {"eps_255": e, "success": s, "png_model_input_success": s, "png_via_predict_success": s / 2,
         "transfer_success_of_clean_correct": 0.0, "transfer_success_of_whitebox_success": 0.0}
        for e, s in ((1.0, 0.5), (4.0, 1.0))]))
    (repo / "metrics" / "tiny.json").write_text(json.dumps(
        {"n_test": 12, "n_rejected": 1, "logreg": {"top1": 0.9167, "top1_ci95": [0.646, 0.985], "log_loss": 0.3,
                                                   "ece": 0.08, "C": 1.0}}))
    Image.open(PETIMAGES / "Cat" / "1.jpg").convert("RGB").save(m / "samples.png")
    raw, prepared, emb = (repo / "data" / k / "tiny" for k in ("raw", "prepared", "embeddings"))
    for d in (raw, prepared, emb):
        d.mkdir(parents=True)
    (raw / "SOURCE.json").write_text(json.dumps({"dataset": "tiny", "source": "imagefolder",
                                                 "location": "/photos/of/tiny", "files": 13}))
    (prepared / "manifest.csv").write_text("path,label,split\n" + "".join(
        f"data/raw/tiny/{c}/{i}.jpg,{c},{'test' if i > 4 else 'train'}\n" for c in ("Cat", "Dog") for i in range(1, 7)))
    (prepared / "rejected.csv").write_text("path,reason\ndata/raw/tiny/Cat/x.jpg,truncated image\n")
    (emb / "meta.json").write_text(json.dumps({"backbone": "efficientnet_lite0", "weights": {"sha256": SHA}}))


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory):
    repo = image_folder_repo(tmp_path_factory.mktemp("plots"), per_class=2, params="")
    write_dvc_yaml(repo)  # the one step after adding a dataset to params.yaml
    _write_tiny_outputs(repo)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(git + ["init", "-q"], cwd=repo, check=True)
    subprocess.run(git + ["add", "dvc.yaml", "params.yaml"], cwd=repo, check=True)
    subprocess.run(git + ["commit", "-qm", "tiny"], cwd=repo, check=True)
    return repo


@pytest.fixture(scope="module")
def tiny_page(tiny_repo):
    readouts = collect(tiny_repo, params={"backbone": "efficientnet_lite0", "data.seed": 42, "head.seed": 7},
                       datasets=["tiny"])  # the copy's committed pets and catsdogs summaries are not this run's
    return readouts, render_page(readouts, title="tiny")


def test_dvc_yaml_plots_are_the_generated_set_for_the_datasets_in_params():
    datasets = yaml.safe_load((REPO / "params.yaml").read_text())["datasets"]
    declared = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    assert declared == yaml.safe_load(plots_section(datasets))["plots"], \
        "dvc.yaml's plots drifted: run `python -m petprobe.reporting.plots`"
    for ds in datasets:
        assert declared.count(f"data/render/{ds}") == 1 and declared.count(f"data/explain/{ds}") == 1


def test_an_imagefolder_dataset_gets_titled_plots_and_its_own_section(tiny_repo, tiny_page):
    readouts, page = tiny_page
    names = [next(iter(p)) if isinstance(p, dict) else p for p in dataset_plots("tiny")]
    shown = subprocess.run(["dvc", "plots", "show", "--json", "-o", str(tiny_repo / "out")], cwd=tiny_repo,
                           capture_output=True, text=True).stdout
    assert set(names) <= set(json.loads(shown)["data"])  # every plot of the new dataset, no hand edit
    for name in ("tiny-logreg-C-search", "tiny-head-loss", "tiny-logreg-confusion", "tiny-attack-success-vs-eps"):
        assert readouts.charts[name]["title"]["text"].startswith("tiny")
    assert "id='ds-tiny'" in page and "<a href='#ds-tiny'>tiny</a>" in page and "id='ds-pets'" not in page
    section = page[page.index("id='ds-tiny'"):page.index("id=glossary")]
    assert "0.9167 <small>[0.646, 0.985]</small>" in section  # headline with its interval, first
    assert section.index("0.9167") < section.index("Accuracy") < section.index("Attacks")
    assert "The dashed rule marks the C" in section and "Training images as the pipeline read them" in section
    assert "metrics/tiny/samples.png" not in re.sub(r"href='[^']*'", "", section)  # captions, not paths


def _nodes(spec):
    """Every dict in a Vega-Lite spec (layers and facets included)."""
    if isinstance(spec, dict):
        yield spec
        for value in spec.values():
            yield from _nodes(value)
    elif isinstance(spec, list):
        for value in spec:
            yield from _nodes(value)


def _colours(spec):
    """Every colour encoding in a Vega-Lite spec."""
    return (n["encoding"]["color"] for n in _nodes(spec) if isinstance(n.get("encoding"), dict) and "color" in n["encoding"])


def _marks(spec):
    return (n["mark"] if isinstance(n["mark"], str) else n["mark"]["type"] for n in _nodes(spec) if "mark" in n)


def test_multi_series_charts_colour_by_a_data_field_and_show_what_they_promise(tiny_page):
    charts = tiny_page[0].charts
    for name in ("tiny-head-loss", "tiny-attack-success-vs-eps"):
        fields = [c.get("field") for c in _colours(charts[name])]
        assert fields and all(f not in (None, "rev") for f in fields)
        assert all(c.get("legend", {}) is not None for c in _colours(charts[name]))
    # The legend names the series: the split of each curve file, the field of each attack curve.
    import vl_convert

    def svg(name):
        return vl_convert.vegalite_to_svg({k: v for k, v in charts[name].items() if k != "$schema"})
    assert ">train<" in svg("tiny-head-loss") and ">val<" in svg("tiny-head-loss")
    assert ">png via predict success<" in svg("tiny-attack-success-vs-eps")
    # Every multi-series plot of the generated set uses such a template.
    for plot in dataset_plots("tiny"):
        if isinstance(plot, dict):
            (name, props), = plot.items()
            series = sum(len(y) if isinstance(y, list) else 1 for y in props["y"].values())
            if series > 1:
                template = json.loads((REPO / ".dvc/plots" / f"{props['template']}.json").read_text())
                assert any(c.get("field") not in (None, "rev") for c in _colours(template)), name
    assert {"rect", "text"} <= set(_marks(charts["tiny-logreg-confusion"]))  # counts in the cells
    assert {"errorbar", "rule", "line"} <= set(_marks(charts["tiny-logreg-C-search"]))
    for name, spec in charts.items():
        assert spec["encoding" if "encoding" in spec else "spec"], name
        text = json.dumps(spec)
        assert "<DVC_METRIC" not in text, name  # every anchor filled (axis titles with units among them)


def test_the_page_names_commit_backbone_weights_seeds_source_and_explains_every_key(tiny_repo, tiny_page):
    _, page = tiny_page
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tiny_repo, capture_output=True, text=True).stdout.strip()
    assert commit in page and "with uncommitted changes" not in page
    assert "efficientnet_lite0" in page and SHA in page
    assert "data.seed=42" in page and "head.seed=7" in page
    assert "imagefolder: /photos/of/tiny" in page and "test 4, train 8" in page and "truncated image" in page
    for key in (*HEADLINE_COLUMNS, "n_test", "C", "pgd4_success", "cam_del_gain", "test_twins", "ideal_p_heldout",
                *(head_key(name, k) for name in TRAINED for k in HEAD_KEYS if k == "top1" or HEADS[name].seeded)):
        assert f"<dt id='g-{key}'>{key}</dt>" in page and GLOSSARY[key].endswith(".")


def test_a_page_of_the_samples_pictures_stays_within_budget_and_links_the_full_ones(tiny_page):
    # As many pictures as the sample's page shows (26), each the size of an attack sheet (1372 x 2106 px,
    # real photos and amplified noise), beside the sample's 20 charts: the page must stay under budget.
    import numpy as np

    rng = np.random.default_rng(0)
    sheet = Image.new("RGB", (1372, 2106))
    for i in range(6):
        for j in range(9):
            tile = Image.open(PETIMAGES / ("Cat", "Dog")[(i + j) % 2] / f"{1 + i + j}.jpg").convert("RGB")
            if j % 3 == 1:
                tile = Image.fromarray(rng.integers(0, 256, (234, 228, 3), dtype=np.uint8))
            sheet.paste(tile.resize((228, 234)), (i * 228, j * 234))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    charts = tiny_page[0].charts
    readouts = Readouts(summaries=tiny_page[0].summaries,
                        charts={f"tiny-{i}-{name.removeprefix('tiny-')}": spec
                                for i in range(5) for name, spec in charts.items()},
                        images={f"data/render/tiny/attack_{i}_to_x.png": buffer.getvalue() for i in range(26)})
    page = render_page(readouts, title="budget")
    assert len(buffer.getvalue()) * 26 > 5 * PAGE_BUDGET  # the pictures alone would blow it
    assert len(page.encode()) <= PAGE_BUDGET
    assert page.count("<a href='../render/tiny/attack_") == 26  # each thumbnail opens its full PNG
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)


@pytest.mark.skipif(__import__("tests.browser", fromlist=["chromium"]).chromium() is None
                    and not __import__("os").environ.get("PETPROBE_REQUIRE_BROWSER"),
                    reason="headless Chromium is not installed (CI installs it and sets PETPROBE_REQUIRE_BROWSER=1)")
def test_the_sectioned_page_renders_whole_in_headless_chromium(tiny_page, tmp_path):
    """A full-page screenshot (the window as tall as the page): drawn to its glossary, nothing refused.
    With PETPROBE_SCREENSHOTS=<folder> the screenshot is kept there (CI keeps it as an artefact)."""
    import os
    import shutil

    import numpy as np

    from tests.browser import blank, open_offline

    page = tmp_path / "index.html"
    page.write_text(tiny_page[1])
    shot = tmp_path / "report.png"
    assert open_offline(page, shot, width=1280, height=8000) == []
    assert not blank(shot)
    ink = np.where(np.asarray(Image.open(shot).convert("L")).min(axis=1) < 200)[0]
    assert 1500 < ink.max() < 7990  # the whole page fits the window: the screenshot is the full page
    if os.environ.get("PETPROBE_SCREENSHOTS"):
        Path(os.environ["PETPROBE_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(os.environ["PETPROBE_SCREENSHOTS"]) / "report-page.png")
