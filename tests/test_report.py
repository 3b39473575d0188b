"""The offline report page: built by DVC's own metrics/plots JSON from a tiny real DVC project,
then opened in headless Chromium with the network cut off."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import PETIMAGES
from petprobe.reporting.report import collect, render_page
from tests.browser import blank, chromium, open_offline

pytestmark = pytest.mark.integration

needs_browser = pytest.mark.skipif(
    chromium() is None and not os.environ.get("PETPROBE_REQUIRE_BROWSER"),
    reason="headless Chromium is not installed (apt-get install chromium; CI installs it and sets "
           "PETPROBE_REQUIRE_BROWSER=1, which turns this skip into a failure)")

DVC_YAML = """
metrics:
  - metrics/cats.json
plots:
  - cats-loss:
      title: "cats: loss per epoch (train and val)"
      template: linear
      x: step
      y:
        train.tsv: loss
        val.tsv: loss
      x_label: epoch
      y_label: cross-entropy loss
  - samples.png
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A DVC project (no git) with one metrics file, one two-file line plot and one real photo."""
    root = tmp_path_factory.mktemp("report")
    dvc = Path(sys.executable).with_name("dvc")
    subprocess.run([str(dvc), "init", "--no-scm", "-q"], cwd=root, check=True)
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / "metrics").mkdir()
    (root / "metrics/cats.json").write_text(json.dumps(
        {"n_test": 40, "head": {"top1": 0.925, "top1_ci95": [0.801, 0.974], "balanced_accuracy": 0.93,
                                "log_loss": 0.21, "ece": 0.05}}))
    for split, losses in (("train", [0.9, 0.5, 0.3]), ("val", [1.0, 0.7, 0.6])):
        (root / f"{split}.tsv").write_text("step\tloss\n" + "".join(f"{i}\t{v}\n" for i, v in enumerate(losses, 1)))
    Image.open(PETIMAGES / "Cat" / "1.jpg").convert("RGB").save(root / "samples.png")
    return root


def test_page_holds_dvc_readouts_and_refers_to_nothing_outside(project):
    readouts = collect(project)
    assert readouts.errors == []
    assert readouts.metrics["metrics/cats.json"]["head"]["top1"] == 0.925
    assert readouts.charts["cats-loss"]["title"]["text"] == "cats: loss per epoch (train and val)"
    assert readouts.images["samples.png"][:8] == b"\x89PNG\r\n\x1a\n"
    page = render_page(readouts, title="t")
    assert "0.9250 <small>[0.801, 0.974]</small>" in page  # headline with its interval
    assert page.count("data:image/svg+xml;base64,") == 1
    assert page.count("data:image/png;base64,") + page.count("data:image/jpeg;base64,") == 1
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "<script" not in page.lower() and "fetch(" not in page


@needs_browser
def test_page_renders_in_headless_chromium_offline(project, tmp_path):
    page = tmp_path / "index.html"
    page.write_text(render_page(collect(project), title="cats: an offline report"))
    console = open_offline(page, tmp_path / "shot.png", width=900, height=900)
    assert console == []
    assert not blank(tmp_path / "shot.png")

    # The same check catches a page that reaches for the network: the browser refuses and says so.
    leaky = tmp_path / "leaky.html"
    leaky.write_text(page.read_text().replace("</body>", "<img src='https://example.com/x.png'></body>"))
    assert any("example.com" in line for line in open_offline(leaky, tmp_path / "leaky.png"))
    blank_page = tmp_path / "blank.html"
    blank_page.write_text("<!DOCTYPE html><html><body></body></html>")
    open_offline(blank_page, tmp_path / "blank.png", width=400, height=300)
    assert blank(tmp_path / "blank.png")
