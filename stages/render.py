"""render@<ds>: what backbone + head think a class looks like, and how little turns one class into another.

Reads render.* and logreg.* (the transfer backbone's head is trained as train_logreg trains the main one);
writes what ``Artefacts.write_render`` lists (the numbers: ``probing.ideal_targets``, ``probing.targeted``).
"""

from __future__ import annotations

import sys
import time

import torch

from petprobe.artefacts import Artefacts
from petprobe.catalogue import TRAINED
from petprobe.device import resolve_device
from petprobe.embedding.embed import embedding_backbone
from petprobe.errors import run_stage
from petprobe.heads.logreg import c_grid
from petprobe.heads.trained import load_head
from petprobe.params import load_params
from petprobe.predict import Predictor
from petprobe.probing.attacks import attack_suite
from petprobe.probing.classifier import head_classifier, pixel_transforms
from petprobe.probing.ideal_targets import ideal_record, ideal_targets, train_colour
from petprobe.probing.sheets import ideal_sheet
from petprobe.probing.targeted import attack_pairs, attacked_images, pairs_in, render_headline, success_by_eps
from petprobe.probing.transfer import transfer_judge
from petprobe.probing.visualise import ideal_images_of


def main(ds: str) -> None:
    params, started, device = load_params(dataset=ds), time.perf_counter(), resolve_device()
    cfg, logreg, artefacts = params.render, params.logreg, Artefacts(ds)
    manifest, _ = artefacts.read_manifest()
    backbone, meta = embedding_backbone(artefacts)
    trained, net, transforms = load_head(artefacts, cfg.head), backbone.build(), pixel_transforms(backbone)
    model, classes = head_classifier(backbone, trained, net, device)
    transfer = transfer_judge(
        cfg.transfer_backbone, backbone.name, manifest, per_class=cfg.transfer_per_class, batch_size=cfg.batch_size,
        device=device, cs=c_grid(logreg.c_min, logreg.c_max, logreg.c_steps), max_iter=logreg.max_iter,
        tol=logreg.tol, cv_folds=logreg.cv_folds, seed=logreg.seed)
    other = next(name for name in TRAINED if name != cfg.head)  # the other trained head judges the ideal images too
    judges = {f"{other}_head": head_classifier(backbone, load_head(artefacts, other), net, device),
              **({transfer.name: (transfer.model, transfer.classes)} if transfer else {})}
    targets = ideal_targets(model, classes, cfg.classes, judges=judges, backbone=backbone, net=net,
                            imagenet_classes=cfg.imagenet_classes, device=device)
    ideal, ideal_report = ideal_images_of(targets, size=cfg.image_size, steps=cfg.steps, lr=cfg.lr, seed=cfg.seed,
                                          tv_weight=cfg.tv_weight, l2_weight=cfg.l2_weight,
                                          color=train_colour(manifest, transforms), device=device)
    report = {"backbone": backbone.name, "head": cfg.head, **ideal_record(ideal_report, targets, len(classes))}

    # Targeted attacks on test images the model gets right, judged by the model, through `petprobe
    # predict` (the PNG files), and by the transfer model.
    attacks = attack_suite(model, eps=cfg.eps, pgd_steps=cfg.pgd_steps, pgd_alpha=cfg.pgd_alpha,
                           random_start=cfg.random_start, seed=cfg.seed, unbounded_alpha=cfg.unbounded_alpha,
                           unbounded_steps=cfg.unbounded_steps, batch_size=cfg.batch_size)
    predictor = Predictor(backbone, trained, precision_name=meta.get("precision", "auto"), batch_size=cfg.batch_size)
    report["attacks"], pooled, sheets = attack_pairs(
        model, attacks, manifest, classes, pairs_in(cfg.pairs, classes), transforms=transforms, n_images=cfg.n_images,
        batch_size=cfg.batch_size, grid_images=cfg.grid_images, transfer=transfer, where=f"render@{ds}",
        predict_files=lambda paths: torch.from_numpy(predictor.predict_proba(paths, progress=False)))

    eps_rows = success_by_eps(attacks, pooled)
    artefacts.write_render({"ideal.png": ideal_sheet(ideal), **{f"attack_{n}.png": s for n, s in sheets.items()}},
                           report, eps_rows, render_headline(eps_rows, report["ideal_summary"]))
    print(f"render@{ds}: {sum(len(v[1]) for v in ideal.values())} ideal images, {len(sheets)} attack pairs "
          f"({attacked_images(report['attacks'])} test images, at most render.n_images={cfg.n_images} per pair) "
          f"on {device.type} in {time.perf_counter() - started:.0f}s", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
