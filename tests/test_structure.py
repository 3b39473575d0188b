"""The code's shape: head names spelled in one registry, stages thin (read params, call the library, write)."""

from __future__ import annotations

import re

import pytest

from conftest import REPO
from petprobe.catalogue import HEADS

pytestmark = pytest.mark.unit

REGISTRY = REPO / "petprobe/catalogue.py"
STAGE_CODE_LINES = 60
# "head" is also a plain word: the record field naming which head a stage used ("head": ...), the
# report table's column title, and attribution's randomisation of the head layer.
OTHER_MEANINGS = (
    re.compile(r"""["']head["']\s*:"""),
    re.compile(r"""RANDOMISATIONS = \("head", "head_last_block"\)"""),
    re.compile(r"""\("dataset", "head", "n_test","""),
)


def code_files():
    return sorted(p for folder in ("petprobe", "stages") for p in (REPO / folder).rglob("*.py"))


def test_head_names_are_string_literals_in_the_registry_only():
    names = "|".join(map(re.escape, HEADS))
    literal = re.compile(rf"""(["'])({names})\1""")
    found = []
    for path in code_files():
        if path == REGISTRY:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            rest = line
            for other in OTHER_MEANINGS:
                rest = other.sub("", rest)
            if literal.search(rest):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not found, "head names spelled outside petprobe/catalogue.py:\n" + "\n".join(found)
    assert all(literal.search(f'"{name}"') for name in HEADS)  # the pattern does find a spelled name


@pytest.mark.parametrize("stage", sorted(p.name for p in (REPO / "stages").glob("*.py") if p.name != "__init__.py"))
def test_every_stage_is_at_most_60_code_lines(stage):
    lines = (REPO / "stages" / stage).read_text().splitlines()
    code = [line for line in lines if line.strip() and not line.strip().startswith("#")]
    assert len(code) <= STAGE_CODE_LINES, f"stages/{stage}: {len(code)} code lines (not blank, not comment)"
