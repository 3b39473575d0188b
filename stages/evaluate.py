"""evaluate@<ds>: score both heads on the test split, with tables and pictures to read at a glance.

Reads evaluate.grid_images. Writes metrics/<ds>.json: {n_test, n_rejected, logreg: {top1,
balanced_accuracy, top3, top5, log_loss, ece, C}, head: {...}} plus, when the comparison stages
are switched on, finetune: {...} and scratch: {...} (read from metrics/<ds>/<name>.json). Per head
in metrics/<ds>/<head>/: per_class.csv (precision, recall, F1), confusion.csv (a DVC confusion
plot) and misclassified.png; and metrics/<ds>/samples.png, training images of every class.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from stages.embeddings import load_manifest, load_split
from stages.errors import PetprobeError, run_stage
from stages.figures import class_samples_grid, misclassified_grid, save_figure
from stages.heads import HEAD_FILES, load_head
from stages.metrics import confusion, per_class_report, summary
from stages.outputs import write_csv, write_json
from stages.params import load_params

COMPARISONS = ("finetune", "scratch")


def head_probabilities(head, X, classes) -> np.ndarray:
    """Class probabilities with columns in ``classes`` order (a head may lack unseen classes)."""
    proba = head.predict_proba(X)
    full = np.zeros((len(X), len(classes)))
    position = {c: i for i, c in enumerate(classes)}
    for j, c in enumerate(head.classes_):
        full[:, position[str(c)]] = proba[:, j]
    return full


def comparison_metrics(path: Path) -> dict | None:
    """The test metrics a comparison stage wrote, or None when it is switched off."""
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        raise PetprobeError(f"{path} is missing or unreadable; run its stage first (dvc repro)") from None
    return result["test"] if result.get("enabled") else None


def main(ds: str) -> None:
    params = load_params()
    params.check_dataset(ds)
    grid_images = params.evaluate.grid_images

    prepared, out = Path("data/prepared") / ds, Path("metrics") / ds
    manifest, classes = load_manifest(prepared)
    test, train = manifest[manifest.split == "test"], manifest[manifest.split == "train"]
    X = load_split(Path("data/embeddings") / ds, manifest, "test")
    y = test.label.to_numpy()
    heads = {name: load_head(Path("data/models") / ds, name) for name in HEAD_FILES}

    report: dict = {"n_test": int(len(test)), "n_rejected": int(len(pd.read_csv(prepared / "rejected.csv")))}
    for name, head in heads.items():
        proba = head_probabilities(head, X, classes)
        report[name] = summary(proba, y, classes)
        write_csv(out / name / "per_class.csv", per_class_report(proba, y, classes))
        write_csv(out / name / "confusion.csv", confusion(proba, y, classes))
        save_figure(misclassified_grid(test.path.tolist(), y, proba, classes, limit=grid_images,
                                       title=f"{ds} test, {name}: most confident mistakes"),
                    out / name / "misclassified.png")
    report["logreg"]["C"] = round(heads["logreg"].C_, 8)
    for name in COMPARISONS:
        if (metrics := comparison_metrics(out / f"{name}.json")) is not None:
            report[name] = metrics
    write_json(Path("metrics") / f"{ds}.json", report)

    # About grid_images tiles in all, at least one per class.
    save_figure(class_samples_grid(train.path.tolist(), train.label.to_numpy(), classes,
                                   per_class=max(1, grid_images // len(classes)), title=f"{ds}: training images"),
                out / "samples.png")
    line = ", ".join(f"{name} top1 {report[name]['top1']:.4f}" for name in (*heads, *COMPARISONS) if name in report)
    print(f"evaluate@{ds}: {len(test)} test images: {line}", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
