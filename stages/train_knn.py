"""train_knn@<ds>: the weighted kNN probe (DINO's kNN evaluation) on the cached embeddings.

Reads knn.k, knn.temperature. Nothing is fitted: the L2-normalised train+val embeddings and their
labels are the voters (as logreg and the head are refit on train+val), saved with k and T to
data/models/<ds>/knn.npz (no pickle). evaluate scores it on the test split like the other heads.
"""

from __future__ import annotations

import sys

import numpy as np

from petprobe.artefacts import Artefacts
from petprobe.catalogue import KNN
from petprobe.errors import run_stage
from petprobe.heads.knn import KNNHead
from petprobe.labels import warn_missing_classes
from petprobe.params import load_params


def main(ds: str) -> None:
    params = load_params(dataset=ds)
    cfg, artefacts = params.knn, Artefacts(ds)
    X, y, classes = artefacts.read_training_data()
    X_dev, y_dev = np.concatenate([X.pop("train"), X.pop("val")]), np.concatenate([y["train"], y["val"]])
    head = KNNHead(k=cfg.k, temperature=cfg.temperature).fit(X_dev, y_dev)
    warn_missing_classes(f"train_knn@{ds}", classes, head.classes_)
    head.save(artefacts.model(KNN.name))
    print(f"train_knn@{ds}: {len(y_dev)} train+val images x {X_dev.shape[1]} dims vote, k={cfg.k}, "
          f"T={cfg.temperature:g}", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
