"""render@<ds>: what backbone + head think a class looks like, and how little turns one class into another.

Reads render.* and logreg.c_min/c_max/c_steps/max_iter (the transfer backbone's head is trained
as train_logreg trains the main one). Writes data/render/<ds>/ideal.png and
attack_<source>_to_<target>.png (captioned grids), metrics/<ds>/render.json (p(target) of each
ideal image; per pair and attack: success, p(target), L-inf/L2 of the perturbation, success after
an 8-bit PNG round trip, transfer success) and metrics/<ds>/render_eps.json (success vs eps, a plot).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from stages.attacks import PGD, attack_suite, pooled_summary, run_attacks
from stages.classifier import (correctly_classified, embedding_backbone, imagenet_categories, imagenet_classifier,
                               load_images, pick_transfer_backbone, pixel_classifier, pixel_transforms,
                               predict, transfer_classifier)
from stages.embeddings import load_manifest, resolve_device
from stages.errors import run_stage
from stages.figures import attack_sheet, ideal_sheet
from stages.heads import c_grid, load_head
from stages.outputs import atomic_dir, write_json
from stages.params import load_params
from stages.visualise import color_sqrt, ideal_images


def main(ds: str) -> None:
    params = load_params()
    params.check_dataset(ds)
    cfg, logreg, started, device = params.render, params.logreg, time.perf_counter(), resolve_device()
    manifest, _ = load_manifest(Path("data/prepared") / ds)
    backbone, _ = embedding_backbone(Path("data/embeddings") / ds)
    trained = load_head(Path("data/models") / ds, cfg.head)
    head, classes = trained.to_module(), [str(c) for c in trained.classes_]
    net = backbone.build()
    model = pixel_classifier(backbone, head, net=net).to(device)
    transforms = pixel_transforms(backbone)
    report = {"backbone": backbone.name, "head": cfg.head, "ideal": {}}

    # Ideal images for the listed classes this dataset has, then ImageNet classes if the backbone has them.
    names = [c for c in cfg.classes if c in classes] or classes[:2]
    models = {"": (model, names, [classes.index(c) for c in names])}
    imagenet = imagenet_classifier(backbone, net)
    if imagenet is not None:
        categories = imagenet_categories()
        models["imagenet_"] = (imagenet.to(device), [f"{i} {categories[i]}" for i in cfg.imagenet_classes],
                               list(cfg.imagenet_classes))
    color = color_sqrt(load_images(manifest[manifest.split == "train"].path[:16], transforms))
    ideal = {}
    for prefix, (m, labels, index) in models.items():
        for method, images in ideal_images(m, index, size=cfg.image_size, steps=cfg.steps, lr=cfg.lr, seed=cfg.seed,
                                           tv_weight=cfg.tv_weight, l2_weight=cfg.l2_weight, color=color,
                                           device=device, desc=f"ideal {prefix}").items():
            p = predict(m, images)[torch.arange(len(index)), index]
            ideal[prefix + method] = (images, labels, p)
            report["ideal"][prefix + method] = {n: round(float(v), 6) for n, v in zip(labels, p)}

    # Targeted attacks on test images the model gets right, judged by the model and by a transfer model.
    attacks = attack_suite(model, eps=cfg.eps, pgd_steps=cfg.pgd_steps, pgd_alpha=cfg.pgd_alpha,
                           random_start=cfg.random_start, seed=cfg.seed, unbounded_alpha=cfg.unbounded_alpha,
                           unbounded_steps=cfg.unbounded_steps, batch_size=cfg.batch_size)
    report["attacks"] = {"config": {name: repr(a) for name, a in attacks.items()}}
    transfer, transfer_classes = None, []
    if transfer_name := pick_transfer_backbone(cfg.transfer_backbone, backbone.name):
        transfer, transfer_classes = transfer_classifier(
            transfer_name, manifest, per_class=cfg.transfer_per_class, batch_size=cfg.batch_size, device=device,
            cs=c_grid(logreg.c_min, logreg.c_max, logreg.c_steps), max_iter=logreg.max_iter)
        report["attacks"]["transfer_backbone"] = transfer_name
    pairs = [p for p in cfg.pairs if p[0] in classes and p[1] in classes] or [classes[1::-1], classes[:2]]
    sheets, pooled = {}, {name: [] for name in attacks}
    for source, target in pairs:
        test = manifest[(manifest.split == "test") & (manifest.label == source)].path.tolist()
        _, images = correctly_classified(model, test, classes.index(source), cfg.n_images, transforms, cfg.batch_size)
        if not len(images):
            print(f"render@{ds}: no test image of {source} is classified right; {source}->{target} skipped",
                  file=sys.stderr)
            continue
        goal = torch.full((len(images),), classes.index(target))
        known = target in transfer_classes and source in transfer_classes
        goal_t = torch.full_like(goal, transfer_classes.index(target)) if known else None
        adversarial, results = run_attacks(attacks, images, goal, transfer=transfer if goal_t is not None else None,
                                           transfer_targets=goal_t, batch_size=cfg.batch_size,
                                           desc=f"{source}->{target} ({len(images)} images)")
        row = report["attacks"][f"{source}_to_{target}"] = {"n_images": len(images)}
        if goal_t is not None:  # how often the transfer model is right on the originals: its baseline
            row["transfer_clean_accuracy"] = round(float(
                (predict(transfer, images).argmax(1) == transfer_classes.index(source)).float().mean()), 6)
        row.update({k: r.summary() for k, r in results.items()})
        for name, result in results.items():
            pooled[name].append(result)
        n = cfg.grid_images
        sheets[f"{source}_to_{target}"] = attack_sheet(images[:n], {k: v[:n] for k, v in adversarial.items()},
                                                       predict(model, images[:n]),
                                                       {k: predict(model, v[:n]) for k, v in adversarial.items()},
                                                       classes, source, target)

    with atomic_dir(Path("data/render") / ds) as out:
        ideal_sheet(ideal).save(out / "ideal.png")
        for name, sheet in sheets.items():
            sheet.save(out / f"attack_{name}.png")
    write_json(Path("metrics") / ds / "render.json", report)
    write_json(Path("metrics") / ds / "render_eps.json", [
        {"eps_255": round(a.eps * 255, 4), **pooled_summary(pooled[name])}
        for name, a in attacks.items() if isinstance(a, PGD) and pooled[name]])
    print(f"render@{ds}: {sum(len(v[1]) for v in ideal.values())} ideal images, {len(sheets)} attack pairs on "
          f"{device.type} in {time.perf_counter() - started:.0f}s", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
