"""render@<ds>: what backbone + head think a class looks like, and how little turns one class into another.

Reads render.* and logreg.c_min/c_max/c_steps/max_iter/tol/cv_folds/seed (the transfer backbone's head
is trained as train_logreg trains the main one). Writes data/render/<ds>/ideal.png and
attack_<source>_to_<target>.png (captioned grids), metrics/<ds>/render.json and
metrics/<ds>/render_eps.json (success vs eps, pooled over pairs, a plot). render.json: per ideal
image p(target) on the image as optimised, mean over 16 new draws of the optimisation's transforms
and over 16 draws of a held-out transform family, under the other head and under the transfer
backbone (as it is and under the held-out draws), with their mean/min/max over the dataset's
classes' images and the chance level (ideal_summary); per pair the transfer model's clean accuracy
and how many clean images it gets right, and per attack: success, p(target), L-inf/L2 of the
perturbation, png_model_input_* (the 8-bit PNG of the model input, re-read), png_via_predict_*
(that PNG through `petprobe predict`), transfer_success_of_clean_correct over
transfer_n_clean_correct images and transfer_success_of_whitebox_success over
transfer_n_whitebox_success images. metrics/<ds>/render_headline.json holds the few render numbers
`dvc metrics show` lists (PGD and transfer success at 4/255; mean ideal-image p under held-out
transforms, under the other backbone and, secondary, under the optimised model).
"""

from __future__ import annotations

import sys
import time

import torch

from petprobe.artefacts import Artefacts
from petprobe.data.images import load_images
from petprobe.device import resolve_device
from petprobe.embedding.embed import embedding_backbone
from petprobe.errors import run_stage
from petprobe.heads.logreg import c_grid
from petprobe.heads.trained import load_head
from petprobe.outputs import atomic_dir, write_json
from petprobe.params import load_params
from petprobe.predict import Predictor
from petprobe.probing.attacks import attack_suite
from petprobe.probing.classifier import imagenet_classifier, pixel_classifier, pixel_transforms
from petprobe.probing.sheets import ideal_sheet
from petprobe.probing.targeted import attack_pairs, render_headline, success_by_eps
from petprobe.probing.transfer import pick_transfer_backbone, transfer_classifier
from petprobe.probing.visualise import color_sqrt, ideal_images_of, ideal_summary


def main(ds: str) -> None:
    params = load_params(dataset=ds)
    cfg, logreg, started, device = params.render, params.logreg, time.perf_counter(), resolve_device()
    artefacts = Artefacts(ds)
    manifest, _ = artefacts.read_manifest()
    backbone, meta = embedding_backbone(artefacts)
    trained = load_head(artefacts, cfg.head)
    head, classes = trained.to_module(), [str(c) for c in trained.classes_]
    net = backbone.build()
    model = pixel_classifier(backbone, head, net=net).to(device)
    transforms = pixel_transforms(backbone)

    transfer, transfer_classes, transfer_name = None, [], pick_transfer_backbone(cfg.transfer_backbone, backbone.name)
    if transfer_name:
        transfer, transfer_classes = transfer_classifier(
            transfer_name, manifest, per_class=cfg.transfer_per_class, batch_size=cfg.batch_size, device=device,
            cs=c_grid(logreg.c_min, logreg.c_max, logreg.c_steps), max_iter=logreg.max_iter,
            tol=logreg.tol, cv_folds=logreg.cv_folds, seed=logreg.seed)

    # Ideal images for the listed classes this dataset has, then ImageNet classes if the backbone has them.
    names = [c for c in cfg.classes if c in classes] or classes[:2]
    models = {"": (model, names, [classes.index(c) for c in names])}
    other_name = "logreg" if cfg.head == "head" else "head"
    other = load_head(artefacts, other_name)
    other_classes = [str(c) for c in other.classes_]
    judges = {"": {f"{other_name}_head": (pixel_classifier(backbone, other.to_module(), net=net).to(device),
                                          [other_classes.index(c) if c in other_classes else None for c in names])}}
    if transfer is not None:
        judges[""][transfer_name] = (transfer, [transfer_classes.index(c) if c in transfer_classes else None
                                                for c in names])
    if (imagenet := imagenet_classifier(backbone, net)) is not None:
        models["imagenet_"] = (imagenet.to(device), [f"{i} {backbone.categories[i]}" for i in cfg.imagenet_classes],
                               list(cfg.imagenet_classes))
    # Colour statistics of every class alike (manifest order puts one class first).
    train = manifest[manifest.split == "train"]
    sample = train.groupby("label", sort=False).head(max(1, 16 // train.label.nunique()))
    color = color_sqrt(load_images(sample.path, transforms))
    ideal, ideal_report = ideal_images_of(models, size=cfg.image_size, steps=cfg.steps, lr=cfg.lr, seed=cfg.seed,
                                          tv_weight=cfg.tv_weight, l2_weight=cfg.l2_weight, color=color,
                                          judges=judges, device=device)
    judged = [f"p_target_{name}{kind}" for name in judges[""] for kind in ("", "_heldout_transforms")]
    summary = ideal_summary(ideal_report, ["p_target_optimised", "p_target_optimisation_transforms",
                                           "p_target_heldout_transforms", *judged])
    report = {"backbone": backbone.name, "head": cfg.head, "ideal": ideal_report,
              "ideal_summary": {**summary, "chance": round(1 / len(classes), 6)}}

    # Targeted attacks on test images the model gets right, judged by the model, through `petprobe
    # predict` (the PNG files), and by the transfer model.
    attacks = attack_suite(model, eps=cfg.eps, pgd_steps=cfg.pgd_steps, pgd_alpha=cfg.pgd_alpha,
                           random_start=cfg.random_start, seed=cfg.seed, unbounded_alpha=cfg.unbounded_alpha,
                           unbounded_steps=cfg.unbounded_steps, batch_size=cfg.batch_size)
    report["attacks"] = {"config": {name: repr(a) for name, a in attacks.items()}}
    if transfer_name:
        report["attacks"]["transfer_backbone"] = transfer_name
    predictor = Predictor(backbone, trained, precision_name=meta.get("precision", "auto"), batch_size=cfg.batch_size)
    predict_files = lambda paths: torch.from_numpy(predictor.predict_proba(paths, progress=False))  # noqa: E731
    pairs = [p for p in cfg.pairs if p[0] in classes and p[1] in classes] or [classes[1::-1], classes[:2]]
    rows, pooled, sheets = attack_pairs(model, attacks, manifest, classes, pairs, transforms=transforms,
                                        n_images=cfg.n_images, batch_size=cfg.batch_size, grid_images=cfg.grid_images,
                                        transfer=transfer, transfer_classes=transfer_classes,
                                        predict_files=predict_files, where=f"render@{ds}")
    report["attacks"].update(rows)

    with atomic_dir(artefacts.render) as out:
        ideal_sheet(ideal).save(out / "ideal.png")
        for name, sheet in sheets.items():
            sheet.save(out / f"attack_{name}.png")
    write_json(artefacts.render_report, report)
    eps_rows = success_by_eps(attacks, pooled)
    write_json(artefacts.render_eps, eps_rows)
    write_json(artefacts.render_headline, render_headline(eps_rows, summary))
    attacked = sum(row["n_images"] for row in rows.values() if isinstance(row, dict) and "n_images" in row)
    print(f"render@{ds}: {sum(len(v[1]) for v in ideal.values())} ideal images, {len(sheets)} attack pairs "
          f"({attacked} test images, at most render.n_images={cfg.n_images} per pair) on {device.type} in "
          f"{time.perf_counter() - started:.0f}s", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
