"""evaluate@<ds>: score the trained heads on the test split.

Reads no params. Writes metrics/<ds>.json: {n_test, n_rejected, <head>: {top1, balanced_accuracy,
top3, top5, log_loss, ece}}, so `dvc metrics diff` compares heads and backbones side by side.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from stages.embeddings import load_manifest, load_split
from stages.errors import run_stage
from stages.heads import LogRegHead
from stages.metrics import summary
from stages.outputs import write_json
from stages.params import load_params


def head_probabilities(head, X, classes) -> np.ndarray:
    """Class probabilities with columns in ``classes`` order (a head may lack unseen classes)."""
    proba = head.predict_proba(X)
    full = np.zeros((len(X), len(classes)))
    position = {c: i for i, c in enumerate(classes)}
    for j, c in enumerate(head.classes_):
        full[:, position[str(c)]] = proba[:, j]
    return full


def main(ds: str) -> None:
    params = load_params()
    params.check_dataset(ds)

    prepared = Path("data/prepared") / ds
    manifest, classes = load_manifest(prepared)
    test = manifest[manifest.split == "test"]
    X = load_split(Path("data/embeddings") / ds, manifest, "test")
    n_rejected = len(pd.read_csv(prepared / "rejected.csv"))
    heads = {"logreg": LogRegHead.load(Path("data/models") / ds / "logreg.npz")}

    report: dict = {"n_test": int(len(test)), "n_rejected": int(n_rejected)}
    for name, head in heads.items():
        report[name] = summary(head_probabilities(head, X, classes), test.label.to_numpy(), classes)
    report["logreg"]["C"] = round(heads["logreg"].C_, 8)
    write_json(Path("metrics") / f"{ds}.json", report)
    line = ", ".join(f"{name} top1 {report[name]['top1']:.4f}" for name in heads)
    print(f"evaluate@{ds}: {len(test)} test images: {line}", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
