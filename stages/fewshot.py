"""fewshot@<ds>: few-shot curves of the logistic and kNN probes on the cached embeddings.

Reads fewshot.shots, fewshot.draws, fewshot.seed, knn.k, knn.temperature, logreg.max_iter, logreg.tol,
and the C train_logreg chose (data/models/<ds>/logreg.npz). For each k of fewshot.shots (0 = all),
fewshot.draws seeded draws of k images per class from train+val (never test); each probe is fitted on
the draw and scored on the test split (petprobe.heads.fewshot). Writes metrics/<ds>/fewshot.json (the
protocol and one row per probe x k x draw) and metrics/<ds>/fewshot_curve.json (mean and sd of test
top-1 over the draws per k: a DVC plot on a log axis).
"""

from __future__ import annotations

import sys

import numpy as np

from petprobe.artefacts import Artefacts
from petprobe.catalogue import KNN, LOGREG
from petprobe.errors import run_stage
from petprobe.heads.fewshot import fewshot_curve, fewshot_rows
from petprobe.heads.knn import KNNHead
from petprobe.heads.logreg import LogRegHead
from petprobe.outputs import write_json
from petprobe.params import load_params


def main(ds: str) -> None:
    params = load_params(dataset=ds)
    cfg, artefacts = params.fewshot, Artefacts(ds)
    manifest, classes = artefacts.read_manifest()
    X, y, _ = artefacts.read_training_data()
    X_pool, y_pool = np.concatenate([X.pop("train"), X.pop("val")]), np.concatenate([y["train"], y["val"]])
    X_test, y_test = artefacts.read_split(manifest, "test"), manifest.label[manifest.split == "test"].to_numpy()
    C = LogRegHead.load(artefacts.model(LOGREG.name)).C_
    probes = {LOGREG.name: lambda: LogRegHead(cs=(C,), max_iter=params.logreg.max_iter, tol=params.logreg.tol),
              KNN.name: lambda: KNNHead(k=params.knn.k, temperature=params.knn.temperature)}
    rows = fewshot_rows(X_pool, y_pool, X_test, y_test, classes, probes, shots=cfg.shots, draws=cfg.draws, seed=cfg.seed)
    curve = fewshot_curve(rows, all_shots=len(y_pool) / len(np.unique(y_pool)))
    write_json(artefacts.fewshot_report, {
        "protocol": f"k images per class drawn from train+val ({len(y_pool)} images), {cfg.draws} draws per k "
                    f"(seed {cfg.seed}), each probe fitted on the draw and scored on the {len(y_test)} test images; "
                    f"logreg at train_logreg's C = {C:.4g} for every draw; knn k = {params.knn.k}, T = {params.knn.temperature}",
        "curve": curve, "rows": [{k: v for k, v in row.items() if k != "indices"} for row in rows]})
    write_json(artefacts.fewshot_curve, curve)
    print(f"fewshot@{ds}: " + "; ".join(f"{p['label']}/class: " + ", ".join(
        f"{name} {p[name]:.3f}±{p[f'{name}_sd']:.3f}" for name in probes) for p in curve), file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
