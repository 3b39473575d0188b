"""A backbone study: which frozen backbone gets furthest on these images? One DVC experiment per backbone.

Design. Each backbone of the study is one DVC experiment, ``study-<backbone>``: the repository's
own pipeline with ``-S backbone=<name>``, run up to ``evaluate@<ds>`` for every dataset (render and
explain are left out: they are about one model, not about choosing one), in a temporary copy
(``dvc exp run --temp``) so the workspace is untouched. The comparison then reads the metrics of
every ``study-*`` experiment of the current commit from ``dvc exp show --json`` (names, revs,
params) and each one's ``metrics/<ds>.json`` from its experiment commit (``git show``: dvc exp show
carries only the declared headline metrics, without intervals, log-loss or ECE).

Why experiments and not ``matrix`` stages over ``backbone x dataset``: the experiments re-use the
pipeline as it is (the same stages, the same metrics with their intervals, nothing duplicated in
dvc.yaml, no second embed stage beside ``embed@<ds>``), and DVC already caches what they share:
download and prepare are restored from the run-cache, and a backbone's embeddings are computed
once and restored from the run-cache in every later experiment with the same inputs. A study run
after adding a backbone starts experiments only for backbones that have none at this commit, so
it computes that one only. Matrix stages would need the study's backbone list in params.yaml
(adding one edits params, which the default ``dvc repro`` would then run for every dataset) and a
copy of every per-backbone stage. Experiments run one after the other: on a CPU, parallel queue
workers (``dvc queue start -j N``) only share the same cores; ``--jobs`` is there for a GPU machine.

The table: per experiment x dataset x head (column ``probe``; the heads of ``metrics/<ds>.json``), top-1 and balanced accuracy
with their 95 % intervals (the test set's, as evaluate computes them), log-loss and ECE; per
backbone, its ImageNet-1k top-1 where published and its parameter count (the registry's ``meta``),
and its embedding throughput measured here (images per second through the embed stage's code on
the first ``throughput_images`` test images, this machine, fp32; a timing, so not part of any DVC
output). Two figures: probe top-1 against ImageNet top-1 (Kornblith et al. 2019, figure 1) and
against throughput.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from petprobe.catalogue import HEADS
from petprobe.errors import PetprobeError
from petprobe.reporting.study_files import STUDY_COLUMNS

__all__ = ["EXPERIMENT_PREFIX", "experiment_name", "StudyRun", "study_experiments", "run_study", "study_table",
           "measure_throughput", "read_study"]

EXPERIMENT_PREFIX = "study-"


def experiment_name(backbone: str) -> str:
    """``study-<backbone>`` as a git ref name allows (``timm/a.b`` -> ``study-timm-a-b``)."""
    return EXPERIMENT_PREFIX + re.sub(r"[^A-Za-z0-9_]+", "-", backbone).strip("-")


@dataclass(frozen=True)
class StudyRun:
    """One experiment of the study: its name, git rev, backbone, datasets and ``metrics/<ds>.json`` per dataset."""

    name: str
    rev: str
    backbone: str
    datasets: tuple[str, ...]
    metrics: dict[str, dict] = field(default_factory=dict)


def _run(repo: Path, *args: str, capture: bool = True) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(list(args), cwd=repo, env=env, capture_output=capture, text=True)
    if done.returncode != 0:
        tail = (done.stderr or "").strip().splitlines()[-1:] if capture else []
        raise PetprobeError(f"{' '.join(args[:4])}… failed (exit {done.returncode})" + (f": {tail[0]}" if tail else ""))
    return done.stdout if capture else ""


def study_experiments(show: list[dict]) -> list[StudyRun]:
    """The ``study-*`` experiments of the current commit in ``dvc exp show --json`` output (without metrics).

    ``dvc exp show`` carries only the metrics dvc.yaml declares (the one-line headline per dataset);
    the full ``metrics/<ds>.json`` (intervals, log-loss, ECE) is read from each experiment's commit.
    """
    runs = []
    for baseline in show:
        if baseline.get("rev") == "workspace":
            continue
        for experiment in baseline.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                name = rev.get("name") or ""
                if not name.startswith(EXPERIMENT_PREFIX) or rev.get("error"):
                    continue
                params = (((rev.get("data") or {}).get("params") or {}).get("params.yaml") or {}).get("data") or {}
                runs.append(StudyRun(name, rev.get("rev", ""), params.get("backbone", ""),
                                     tuple(params.get("datasets") or ())))
        break  # the first entry after the workspace is the current commit; older baselines are older studies
    return runs


def read_study(repo: Path = Path(".")) -> list[StudyRun]:
    """The study experiments of the current commit, each with ``metrics/<ds>.json`` from its commit."""
    runs = study_experiments(json.loads(_run(repo, "dvc", "exp", "show", "--json") or "[]"))
    for run in runs:
        for ds in run.datasets:
            try:
                run.metrics[ds] = json.loads(_run(repo, "git", "show", f"{run.rev}:metrics/{ds}.json"))
            except PetprobeError:
                continue  # evaluate@<ds> did not finish in that experiment: no row
    return runs


def run_study(backbones: list[str], datasets: list[str], *, repo: Path = Path("."), jobs: int = 1,
              log=print) -> list[str]:
    """Start the experiments of the backbones that have none at this commit; return their names."""
    done = {run.backbone for run in read_study(repo) if run.metrics}
    missing = [b for b in dict.fromkeys(backbones) if b not in done]
    targets = [f"evaluate@{ds}" for ds in datasets]
    for backbone in missing:
        log(f"study: {backbone} ({experiment_name(backbone)})")
        if jobs > 1:
            _run(repo, "dvc", "exp", "run", "--queue", "-S", f"backbone={backbone}", "-n", experiment_name(backbone),
                 *targets)
        else:
            _run(repo, "dvc", "exp", "run", "--temp", "-S", f"backbone={backbone}", "-n", experiment_name(backbone),
                 *targets, capture=False)
    if missing and jobs > 1:
        _run(repo, "dvc", "queue", "start", "-j", str(jobs))
        while any(state in _run(repo, "dvc", "queue", "status") for state in ("Queued", "Running")):
            time.sleep(5)
        finished = {run.backbone for run in read_study(repo) if run.metrics}
        if not set(missing) <= finished:
            raise PetprobeError(f"study: no results for {', '.join(sorted(set(missing) - finished))}; see `dvc queue logs`")
    skipped = [b for b in backbones if b in done]
    if skipped:
        log(f"study: already done at this commit: {', '.join(skipped)}")
    return [experiment_name(b) for b in missing]


def measure_throughput(backbone_name: str, paths: list[str], *, batch_size: int = 32) -> float | None:
    """Images per second through the embed stage's code (decode, resize, network), fp32, this machine;
    None when the backbone's weights are not here."""
    import torch

    from petprobe.backbones import get_backbone
    from petprobe.device import resolve_device, resolve_precision
    from petprobe.embedding.embed import embed_images

    backbone = get_backbone(backbone_name)
    if not backbone.weights.available() or not paths:
        return None
    net, device = backbone.build(), resolve_device()
    precision = resolve_precision("fp32", device)
    run = lambda: list(embed_images(net, backbone.preprocessing, paths, batch_size=batch_size,  # noqa: E731
                                    num_workers=0, device=device, precision=precision, progress=False))
    run()  # warm-up: first-call allocations and kernel selection are not throughput
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    run()
    return len(paths) / (time.perf_counter() - started)


def study_table(runs: list[StudyRun], throughput: dict[str, float | None] | None = None) -> pd.DataFrame:
    """One row per experiment x dataset x head with a ``top1`` (the heads of ``metrics/<ds>.json``)."""
    from petprobe.backbones import get_backbone

    rows = []
    for run in runs:
        backbone = get_backbone(run.backbone)
        acc, n_params = backbone.meta_value("acc@1"), backbone.meta_value("num_params")
        for ds, metrics in sorted(run.metrics.items()):
            for head, m in metrics.items():
                if not isinstance(m, dict) or "top1" not in m:
                    continue
                rows.append({
                    "backbone": run.backbone, "dataset": ds, "probe": head,
                    "top1": m["top1"], "top1_lo": m.get("top1_ci95", [np.nan] * 2)[0],
                    "top1_hi": m.get("top1_ci95", [np.nan] * 2)[1],
                    "bacc": m.get("balanced_accuracy", np.nan),
                    "bacc_lo": m.get("balanced_accuracy_ci95", [np.nan] * 2)[0],
                    "bacc_hi": m.get("balanced_accuracy_ci95", [np.nan] * 2)[1],
                    "log_loss": m.get("log_loss", np.nan), "ece": m.get("ece", np.nan),
                    "n_test": metrics.get("n_test"), "imagenet_acc1": acc if acc is not None else np.nan,
                    "params_m": n_params / 1e6 if n_params else np.nan,
                    "img_per_s": (throughput or {}).get(run.backbone) or np.nan, "experiment": run.name,
                })
    table = pd.DataFrame(rows, columns=list(STUDY_COLUMNS))
    order = table["probe"].map({name: i for i, name in enumerate(HEADS)})  # heads in the registry's order
    return (table.assign(_order=order).sort_values(["dataset", "_order", "top1"], ascending=[True, True, False],
                                                   kind="stable").drop(columns="_order").reset_index(drop=True))
