"""evaluate@<ds>: score every trained head on the test split, with tables and pictures to read at a glance.

Reads evaluate.grid_images. Writes metrics/<ds>.json: {n_test, n_rejected, <head>: {top1, top1_ci95,
balanced_accuracy, balanced_accuracy_ci95, top3, top5, log_loss, ece}} per trained head (95% intervals:
Wilson for top-1, Wilson at Kish's effective sample size for balanced accuracy); logreg adds C and
C_at_grid_edge (as logreg_search.json recorded it); the torch head (its saved model, head.seed, with
calibrated probabilities) adds `seeds` (mean, sd, min, max, per-seed values over head.seed and
head.spread_seeds) and `calibration` (temperature, log-loss and ECE before and after); switched-on
comparisons add finetune and scratch. Per head in metrics/<ds>/<head>/: headline.json (what
headline@<ds> copies into `dvc metrics show`'s row), per_class.csv, confusion.csv (a DVC plot),
misclassified.png and, calibrated, reliability.png; and metrics/<ds>/samples.png.
"""

from __future__ import annotations

import sys

from petprobe.artefacts import Artefacts
from petprobe.catalogue import COMPARISONS, LOGREG, TRAINED, get_head
from petprobe.errors import run_stage
from petprobe.heads.evaluation import score_head
from petprobe.heads.logreg import recorded_grid_edge
from petprobe.heads.metrics import confusion, headline, per_class_report
from petprobe.heads.trained import load_seed_heads
from petprobe.outputs import write_csv, write_json
from petprobe.params import load_params
from petprobe.reporting.figures import class_samples_grid, misclassified_grid, reliability_diagram, save_figure


def main(ds: str) -> None:
    params = load_params(dataset=ds)
    cfg = params.evaluate
    artefacts = Artefacts(ds)
    manifest, classes = artefacts.read_manifest()
    test, train = manifest[manifest.split == "test"], manifest[manifest.split == "train"]
    X, y = artefacts.read_split(manifest, "test"), test.label.to_numpy()
    heads = {name: load_seed_heads(artefacts, name) for name in TRAINED}

    report: dict = {"n_test": int(len(test)), "n_rejected": int(len(artefacts.read_rejected()))}
    for name, seeded in heads.items():
        out = artefacts.head_report(name)
        report[name], proba, reliability = score_head(get_head(name), seeded, X, y, classes)
        if reliability:
            save_figure(reliability_diagram(reliability, title=f"{ds} test, {name}: reliability"),
                        artefacts.reliability_png(name))
        write_csv(out / "per_class.csv", per_class_report(proba, y, classes))
        write_csv(out / "confusion.csv", confusion(proba, y, classes))
        save_figure(misclassified_grid(test.path.tolist(), y, proba, classes, limit=cfg.grid_images,
                                       title=f"{ds} test, {name}: most confident mistakes"),
                    out / "misclassified.png")
    # A pick at the end of the converged grid means the optimum may lie beyond it: as train_logreg recorded it.
    logreg = next(iter(heads[LOGREG.name].values()))
    report[LOGREG.name].update(C=round(logreg.C_, 8), C_at_grid_edge=recorded_grid_edge(artefacts))
    for name in COMPARISONS:
        if (metrics := artefacts.read_comparison(name)) is not None:
            report[name] = metrics
    write_json(artefacts.summary_json, report)
    for name in heads:
        write_json(artefacts.head_headline(name), headline(report[name], report["n_test"]))

    # About grid_images tiles in all, at least one per class.
    save_figure(class_samples_grid(train.path.tolist(), train.label.to_numpy(), classes,
                                   per_class=max(1, cfg.grid_images // len(classes)), title=f"{ds}: training images"),
                artefacts.samples_png)
    line = ", ".join(f"{name} top1 {report[name]['top1']:.4f} [{report[name]['top1_ci95'][0]:.3f}, "
                     f"{report[name]['top1_ci95'][1]:.3f}]" for name in (*heads, *COMPARISONS) if name in report)
    print(f"evaluate@{ds}: {len(test)} test images: {line}", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
