"""evaluate@<ds>: score both heads on the test split, with tables and pictures to read at a glance.

Reads evaluate.grid_images. Writes metrics/<ds>.json: {n_test, n_rejected, logreg: {top1,
top1_ci95, balanced_accuracy, balanced_accuracy_ci95, top3, top5, log_loss, ece, C, C_at_grid_edge
(no/low/high, as train_logreg recorded it in metrics/<ds>/logreg_search.json)}, head: {...}} (95%
intervals over the test images: Wilson for top-1, Wilson at Kish's effective sample size for
balanced accuracy) plus, when the comparison stages are switched on, finetune: {...} and scratch:
{...} (read from metrics/<ds>/<name>.json). Per head in metrics/<ds>/<head>/: headline.json
(n_test, top1, balanced_accuracy, log_loss, ece; headline@<ds> copies top1 and balanced accuracy into
`dvc metrics show`'s row; metrics/<ds>.json
is the full summary), per_class.csv (precision, recall, F1; classes with test images),
confusion.csv (a DVC confusion plot) and misclassified.png; and metrics/<ds>/samples.png, training
images of every class.
"""

from __future__ import annotations

import sys

from petprobe.artefacts import Artefacts
from petprobe.catalogue import COMPARISONS, LOGREG, TRAINED
from petprobe.errors import run_stage
from petprobe.heads.logreg import recorded_grid_edge
from petprobe.heads.metrics import confusion, headline, per_class_report, summary
from petprobe.heads.trained import load_head
from petprobe.labels import align_proba
from petprobe.outputs import write_csv, write_json
from petprobe.params import load_params
from petprobe.reporting.figures import class_samples_grid, misclassified_grid, save_figure


def main(ds: str) -> None:
    params = load_params(dataset=ds)
    cfg = params.evaluate
    artefacts = Artefacts(ds)
    manifest, classes = artefacts.read_manifest()
    test, train = manifest[manifest.split == "test"], manifest[manifest.split == "train"]
    X, y = artefacts.read_split(manifest, "test"), test.label.to_numpy()
    heads = {name: load_head(artefacts, name) for name in TRAINED}

    report: dict = {"n_test": int(len(test)), "n_rejected": int(len(artefacts.read_rejected()))}
    for name, head in heads.items():
        proba = align_proba(head.predict_proba(X), head.classes_, classes)
        out = artefacts.head_report(name)
        report[name] = summary(proba, y, classes)
        write_csv(out / "per_class.csv", per_class_report(proba, y, classes))
        write_csv(out / "confusion.csv", confusion(proba, y, classes))
        save_figure(misclassified_grid(test.path.tolist(), y, proba, classes, limit=cfg.grid_images,
                                       title=f"{ds} test, {name}: most confident mistakes"),
                    out / "misclassified.png")
    # A pick at the end of the converged grid means the optimum may lie beyond it: as train_logreg recorded it.
    report[LOGREG.name].update(C=round(heads[LOGREG.name].C_, 8), C_at_grid_edge=recorded_grid_edge(artefacts))
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
