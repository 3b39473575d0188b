"""Targeted attacks on a dataset, pair by pair: which test images, which goal, what is reported.

For each ``[source, target]`` pair, the first test images of ``source`` that the model classifies
right are attacked toward ``target`` by every attack of the suite, judged by the model, through
`petprobe predict`'s file path (``predict_files``), and (when it knows both classes) by the transfer
model over the images it classifies right when clean and over those of them the white-box attack
fooled, and drawn as one sheet.
"""

from __future__ import annotations

import sys

import torch
import torch.nn as nn

from petprobe.heads.training import predict_proba
from petprobe.probing.attacks import PGD, Assessment, Attack, pooled_summary, run_attacks
from petprobe.probing.classifier import correctly_classified
from petprobe.probing.sheets import attack_sheet

__all__ = ["pairs_in", "attack_pairs", "attacked_images", "success_by_eps", "render_headline"]


def pairs_in(pairs, classes: list[str]) -> list:
    """The [source, target] ``pairs`` whose classes are both in ``classes``; else both ways between its first two."""
    return [p for p in pairs if p[0] in classes and p[1] in classes] or [classes[1::-1], classes[:2]]


def attack_pairs(model: nn.Module, attacks: dict[str, Attack], manifest, classes: list[str], pairs, *,
                 transforms, n_images: int, batch_size: int, grid_images: int,
                 transfer=None, predict_files=None,
                 where: str = "render") -> tuple[dict, dict[str, list[Assessment]], dict]:
    """Run ``attacks`` on every pair; return (report, assessments by attack, sheets by pair). The
    report (render.json's ``attacks``): each attack's ``config``, the ``transfer_backbone`` (the
    name of ``transfer``, a ``probing.transfer.TransferModel``, when there is one) and a row per pair."""
    report: dict = {"config": {name: repr(a) for name, a in attacks.items()}}
    sheets, pooled = {}, {name: [] for name in attacks}
    transfer_classes = transfer.classes if transfer is not None else []
    if transfer is not None:
        report["transfer_backbone"] = transfer.name
    for source, target in pairs:
        test = manifest[(manifest.split == "test") & (manifest.label == source)].path.tolist()
        _, images = correctly_classified(model, test, classes.index(source), n_images, transforms, batch_size)
        if not len(images):
            print(f"{where}: no test image of {source} is classified right; {source}->{target} skipped",
                  file=sys.stderr)
            continue
        goal = torch.full((len(images),), classes.index(target))
        known = target in transfer_classes and source in transfer_classes
        goal_t = torch.full_like(goal, transfer_classes.index(target)) if known else None
        source_t = torch.full_like(goal, transfer_classes.index(source)) if known else None
        judge = transfer.model if goal_t is not None else None
        adversarial, results = run_attacks(attacks, images, goal, transfer=judge,
                                           transfer_targets=goal_t, transfer_sources=source_t,
                                           predict_files=predict_files, batch_size=batch_size,
                                           desc=f"attacks {source}->{target} ({len(images)} images)")
        row = report[f"{source}_to_{target}"] = {"n_images": len(images)}
        if goal_t is not None:  # the transfer model's accuracy on the clean images; only those it gets right count
            clean = next(iter(results.values())).transfer_clean_correct
            row["transfer_clean_accuracy"] = round(float(clean.float().mean()), 6)
            row["transfer_n_clean_correct"] = int(clean.sum())
        row.update({k: r.summary() for k, r in results.items()})
        for name, result in results.items():
            pooled[name].append(result)
        n = grid_images
        sheets[f"{source}_to_{target}"] = attack_sheet(
            images[:n], {k: v[:n] for k, v in adversarial.items()}, predict_proba(model, images[:n], batch_size=16),
            {k: predict_proba(model, v[:n], batch_size=16) for k, v in adversarial.items()}, classes, source, target)
    return report, pooled, sheets


def attacked_images(report: dict) -> int:
    """How many test images ``attack_pairs``' report says were attacked, over every pair."""
    return sum(row["n_images"] for row in report.values() if isinstance(row, dict) and "n_images" in row)


def success_by_eps(attacks: dict[str, Attack], pooled: dict[str, list[Assessment]]) -> list[dict]:
    """One row per PGD radius, pooled over every pair (the success-vs-eps plot)."""
    return [{"eps_255": round(a.eps * 255, 4), **pooled_summary(pooled[name])}
            for name, a in attacks.items() if isinstance(a, PGD) and pooled[name]]


def render_headline(eps_rows: list[dict], ideal: dict, *, eps_255: float = 4.0) -> dict:
    """The few render numbers ``dvc metrics show``'s row carries (the full report stays render.json).

    Short flat keys, because they are columns of one table with every other metric file (which
    must fit 200 characters). ``pgd<eps>_success``: targeted PGD success at that radius, pooled
    over every pair (from ``eps_rows``, success_by_eps); ``pgd<eps>_transfer``: transfer success at
    that radius over the images the transfer model classifies correctly when clean; both left out
    when the radius was not run. ``ideal_p_heldout``: mean p(target) of the dataset's classes'
    ideal images (``ideal``: ``ideal_summary``, plain-pixel and Fourier) under the model they were
    optimised for, but through a transform family they were not optimised under. The second
    backbone's judgement and the optimised-for model's own (secondary) are in render.json's
    ``ideal_summary``.
    """
    out: dict = {}
    row = next((r for r in eps_rows if abs(r["eps_255"] - eps_255) < 1e-3), None)
    if row is not None:
        out[f"pgd{eps_255:g}_success"] = row["success"]
        if "transfer_success_of_clean_correct" in row:
            out[f"pgd{eps_255:g}_transfer"] = row["transfer_success_of_clean_correct"]
    if "p_target_heldout_transforms" in ideal:
        out["ideal_p_heldout"] = ideal["p_target_heldout_transforms"]["mean"]
    return out
