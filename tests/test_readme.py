"""The README is one page, every command in it is run (by CI) or says why not, and its tables and
docs/results.md are exactly what `python -m petprobe.reporting.docs` writes from metrics/."""

from __future__ import annotations

import re
import runpy
import subprocess

import pytest

from conftest import REPO
from petprobe.data.sample import SAMPLE_DIR
from petprobe.reporting.docs import DOC_FILES, regenerate

README = (REPO / "README.md").read_text()
blocks = runpy.run_path(str(REPO / ".ci" / "readme_blocks.py"))["blocks"]
SHELL = {"bash", "sh", "shell", "console"}


@pytest.mark.unit
def test_readme_is_one_page_with_a_contents_list_and_working_links():
    assert len(README.splitlines()) <= 250
    contents = README.split("## Contents", 1)[1].split("\n## ", 1)[0]
    anchors = re.findall(r"\]\(#([^)]+)\)", contents)
    headings = [re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^## (.+)$", README, re.M)]
    assert anchors and set(anchors) <= set(headings), set(anchors) - set(headings)
    for target in re.findall(r"\]\((docs/[^)#]+)", README):
        assert (REPO / target).is_file(), target
    for page in (REPO / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([\w-]+\.md)", page.read_text()):
            assert (REPO / "docs" / target).is_file(), (page.name, target)


@pytest.mark.integration
def test_every_shell_block_is_marked_runnable_or_says_why_not():
    shell = [b for b in blocks(README) if b["lang"] in SHELL]
    assert shell, "no shell block found"
    for block in shell:
        assert block["context"] or block["reason"], f"README line {block['line']}: shell block without a marker"
        assert block["context"] in (None, "install", "offline", "workspace"), block
        # At least parseable by bash (CI runs the runnable ones).
        subprocess.run(["bash", "-n"], input=block["body"], text=True, check=True)
    contexts = [b["context"] for b in shell]
    assert contexts.count("install") == 1 and contexts.index("install") < contexts.index("offline")
    # Files named in runnable commands exist in a plain clone.
    for block in shell:
        if block["context"]:
            for path in re.findall(r"petprobe/data/\S+", block["body"]):
                assert (REPO / path).exists(), path


@pytest.mark.unit
def test_the_workspace_block_is_what_ci_runs_there():
    # CI's workspace part runs these commands verbatim (clean `dvc repro` twice, `dvc metrics show`).
    commands = {line.split("#")[0].strip() for b in blocks(README) if b["context"] == "workspace"
                for line in b["body"].splitlines()} - {""}
    ci = (REPO / ".ci" / "run").read_text()
    for command in commands:
        assert command in ci, command


@pytest.mark.unit
def test_sample_counts_in_the_docs_are_the_sample_s():
    photos = len(list((SAMPLE_DIR / "oxford-iiit-pet" / "images").iterdir()))
    trimaps = len(list((SAMPLE_DIR / "oxford-iiit-pet" / "annotations" / "trimaps").iterdir()))
    for text in (README, (REPO / "docs" / "data-sources.md").read_text(), (SAMPLE_DIR / "LICENSE.md").read_text()):
        assert re.findall(r"(\d+)\s+(?:real\s+)?(?:Oxford-IIIT\s+Pet\s+)?photos", text)[0] == str(photos)
    assert f"{trimaps} trimaps" in (SAMPLE_DIR / "LICENSE.md").read_text()


@pytest.mark.unit
def test_generated_tables_match_the_committed_metrics_byte_for_byte():
    for name in DOC_FILES:
        text = (REPO / name).read_text()
        assert "<!-- generated: " in text, name
        assert regenerate(text, REPO / "metrics", name) == text, (
            f"{name} differs from what metrics/ gives: run python -m petprobe.reporting.docs")
