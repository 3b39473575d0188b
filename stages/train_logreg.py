"""train_logreg@<ds>: logistic regression on the cached embeddings.

Reads logreg.c_min, logreg.c_max, logreg.c_steps, logreg.max_iter. C is picked by validation
accuracy, then the model is refit on train+val. Writes data/models/<ds>/logreg.npz (no pickle)
and metrics/<ds>/logreg_search.json (validation accuracy per C, chosen C).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from stages.embeddings import load_manifest, load_split
from stages.errors import run_stage
from stages.heads import LogRegHead, c_grid
from stages.outputs import write_json
from stages.params import load_params


def main(ds: str) -> None:
    params = load_params()
    params.check_dataset(ds)
    cfg = params.logreg

    manifest, classes = load_manifest(Path("data/prepared") / ds)
    embeddings = Path("data/embeddings") / ds
    X = {split: load_split(embeddings, manifest, split) for split in ("train", "val")}
    y = {split: manifest.label[manifest.split == split].to_numpy() for split in ("train", "val")}

    head = LogRegHead(cs=tuple(c_grid(cfg.c_min, cfg.c_max, cfg.c_steps)), max_iter=cfg.max_iter)
    head.fit(X["train"], y["train"], X["val"], y["val"])
    missing = sorted(set(classes) - set(head.classes_))
    if missing:
        print(f"train_logreg@{ds}: warning: no training images for {', '.join(missing)}", file=sys.stderr)

    head.save(Path("data/models") / ds / "logreg.npz")
    write_json(Path("metrics") / ds / "logreg_search.json", {
        "chosen_C": head.C_,
        "val_accuracy": {f"{c:.3g}": round(s, 6) for c, s in head.val_scores_.items()},
        "val_log_loss": {f"{c:.3g}": round(s, 6) for c, s in head.val_log_loss_.items()},
        "n_train": int(len(y["train"])), "n_val": int(len(y["val"])),
    })
    best = head.val_scores_.get(head.C_, float("nan"))
    print(f"train_logreg@{ds}: C={head.C_:.3g} (val top1 {best:.3f}), refit on {len(y['train']) + len(y['val'])} "
          f"images x {X['train'].shape[1]} dims", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
