"""The docs generator: tables written from metrics files, checked against hand-written Markdown."""

from __future__ import annotations

import json

import pytest

from petprobe.errors import PetprobeError
from petprobe.reporting import docs
from petprobe.reporting.docs import EpsTable, Row, Table, main, regenerate, render_table

pytestmark = pytest.mark.unit


@pytest.fixture
def metrics(tmp_path, monkeypatch):
    root = tmp_path / "metrics"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "a.json").write_text(json.dumps({"n": 12, "m": {"top1": 0.91666, "top1_ci95": [0.646, 0.985]}}))
    (root / "b.json").write_text(json.dumps({"n": 3, "m": {"top1": 1.0, "top1_ci95": [0.4385, 1.0], "top3": 1.0}}))
    (root / "a" / "eps.json").write_text(json.dumps([{"eps": 1.0, "ok": 0.5}, {"eps": 2.0, "ok": 0.75}]))
    monkeypatch.setitem(docs.TABLES, "t", Table(datasets=("a", "b"), corner="x", rows=(
        Row("images", "{ds}.json", "n", digits=0),
        Row("top-1", "{ds}.json", "m.top1", ci=True),
        Row("top-3", "{ds}.json", "m.top3", digits=2, optional=True),
    )))
    monkeypatch.setitem(docs.TABLES, "e", EpsTable("a", "a/eps.json", columns=(("eps", "eps", 0), ("ok", "ok", 2))))
    return root


def test_a_table_is_exactly_the_hand_written_markdown(metrics):
    assert render_table("t", metrics) == (
        "| x | a | b |\n"
        "|---|---|---|\n"
        "| images | 12 | 3 |\n"
        "| top-1 | 0.917 [0.646, 0.985] | 1.000 [0.439, 1.000] |\n"
        "| top-3 | n/a | 1.00 |\n")
    assert render_table("e", metrics) == "| eps | ok |\n|---|---|\n| 1 | 0.50 |\n| 2 | 0.75 |\n"


def test_blocks_are_rewritten_and_the_text_around_them_kept(metrics):
    text = "intro\n<!-- generated: e -->\nstale\n<!-- end generated -->\nafter\n<!-- generated: t -->\n<!-- end generated -->\n"
    new = regenerate(text, metrics)
    assert new.startswith("intro\n<!-- generated: e -->\n| eps | ok |") and "stale" not in new
    assert "after\n<!-- generated: t -->\n| x | a | b |" in new and new.endswith("<!-- end generated -->\n")
    assert regenerate(new, metrics) == new  # idempotent


def test_a_missing_key_or_table_is_one_line_naming_it(metrics, monkeypatch):
    monkeypatch.setitem(docs.TABLES, "bad", Table(datasets=("a",), rows=(Row("ECE", "{ds}.json", "m.ece"),)))
    with pytest.raises(PetprobeError, match=r"README.md: docs table 'bad', row 'ECE': \{ds\}.json has no key 'm.ece'"):
        regenerate("<!-- generated: bad -->\n<!-- end generated -->\n", metrics, "README.md")
    with pytest.raises(PetprobeError, match="docs table 'nope' is not defined"):
        regenerate("<!-- generated: nope -->\n<!-- end generated -->\n", metrics)
    with pytest.raises(PetprobeError, match="missing"):
        render_table("t", metrics.parent / "elsewhere")


def test_check_mode_fails_on_stale_docs_and_rewrite_mode_fixes_them(metrics, monkeypatch, capsys):
    repo = metrics.parent
    (repo / "docs").mkdir()
    monkeypatch.setattr(docs, "DOC_FILES", ("README.md", "docs/results.md"))
    (repo / "README.md").write_text("<!-- generated: t -->\nold\n<!-- end generated -->\n")
    (repo / "docs" / "results.md").write_text("no tables\n")
    assert main(["--check", "--repo", str(repo)]) == 1
    assert "README.md: differs" in capsys.readouterr().err
    assert "old" in (repo / "README.md").read_text()  # --check changes nothing
    assert main(["--repo", str(repo)]) == 0
    assert main(["--check", "--repo", str(repo)]) == 0
    assert "| top-1 | 0.917" in (repo / "README.md").read_text()
