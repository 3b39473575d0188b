"""Progress in a log (stderr not a terminal, as under pytest's capture): whole lines, rate-limited."""

import re
import time

import pytest
import torch
import torch.nn as nn

from petprobe import progress as progress_module
from petprobe.probing.attacks import PGD, Unbounded, run_attacks
from petprobe.progress import progress

pytestmark = pytest.mark.unit

LINE = re.compile(r"^(?P<desc>.+): (?P<n>\d+)/(?P<total>\d+) (?P<unit>\w+) \(\d+%\) \[[\d:]+<[\d:?]+, .+/s\]$")


def test_log_lines_are_whole_rate_limited_and_end_with_a_closing_line(capsys, monkeypatch):
    monkeypatch.setattr(progress_module, "LOG_INTERVAL", 0.2)
    monkeypatch.setattr(progress_module, "_last_line", [0.0])
    for _ in progress(range(12), desc="embed pets/train", unit="img"):
        time.sleep(0.05)  # 0.6 s in all: about 3 lines, then the closing one
    for _ in progress(range(5), desc="inner", leave=False):
        pass  # quick and not left: nothing
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert 2 <= len(lines) <= 5 and all(LINE.match(line) for line in lines), err
    assert lines[-1].startswith("embed pets/train: 12/12 img (100%)")
    assert "inner" not in err


def test_attack_progress_moves_inside_each_pgd_run(capsys, monkeypatch):
    monkeypatch.setattr(progress_module, "LOG_INTERVAL", 0.0)  # every update is a line
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    images, targets = torch.rand(3, 3, 4, 4), torch.tensor([1, 1, 1])
    attacks = {"pgd_8": PGD(model, eps=8 / 255, alpha=2 / 255, steps=4), "unbounded": Unbounded(model, steps=3)}
    run_attacks(attacks, images, targets, desc="attacks Cat->Dog")
    counts = [int(LINE.match(line)["n"]) for line in capsys.readouterr().err.splitlines()]
    assert counts[:4] == [1, 2, 3, 4]  # one line per PGD step, not one per attack
    assert counts[-1] == 7  # 4 PGD steps + 3 unbounded (credited when it stops early)
