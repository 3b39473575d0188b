"""train_head@<ds>: a small torch head on the cached embeddings.

Reads head.hidden, head.dropout, head.lr, head.weight_decay, head.batch_size, head.max_epochs,
head.patience, head.refit, head.seed. Writes data/models/<ds>/head.pt (state_dict) + head.json
(config, class names) and, with DVCLive, metrics/<ds>/train_head/: per-epoch train/val loss and
accuracy (plots/metrics/*.tsv), a curves PNG (plots/images/curves.png) and metrics.json (the
kept epoch's validation numbers).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from dvclive import Live

from stages.embeddings import load_manifest, load_training_data
from stages.errors import run_stage
from stages.figures import training_curves
from stages.heads import TorchHead
from stages.outputs import atomic_dir
from stages.params import load_params


@contextlib.contextmanager
def outside_the_repo(folder: str):
    """Run DVCLive as a plain file logger, blind to git and to the running DVC command.

    DVCLive looks for the repo from the working directory: in a repo without commits it fails
    ("Empty git repo"), and inside `dvc exp run` it git-adds files. This stage only wants its
    per-epoch files, which DVC tracks as declared outs.
    """
    hidden = {k: os.environ.pop(k) for k in ("DVC_ROOT", "DVC_EXP_BASELINE_REV", "DVC_EXP_NAME") if k in os.environ}
    here = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(here)
        os.environ.update(hidden)


def write_curves(out_dir: Path, history: list[dict], best_epoch: int, title: str) -> None:
    """Log the epochs with DVCLive, then publish its folder atomically as ``out_dir``."""
    # DVCLive writes file by file; a scratch folder, published whole, keeps readers from half a log.
    with tempfile.TemporaryDirectory(prefix="petprobe-dvclive-") as scratch, atomic_dir(out_dir) as tmp:
        with outside_the_repo(scratch), Live(dir=scratch, dvcyaml=False, save_dvc_exp=False, report=None) as live:
            for record in history:
                live.step = record["epoch"]  # steps are epochs (1, 2, ...), as in best_epoch
                for split in ("train", "val"):
                    for metric in ("loss", "accuracy"):
                        if f"{split}_{metric}" in record:
                            live.log_metric(f"{split}/{metric}", round(record[f"{split}_{metric}"], 6))
                live.next_step()
            live.step = history[-1]["epoch"]
            live.log_image("curves.png", training_curves(history, best_epoch=best_epoch, title=title))
            best = history[best_epoch - 1]
            live.summary = {"best_epoch": best_epoch, "epochs_run": len(history),
                            **{k: round(best[k], 6) for k in ("val_loss", "val_accuracy") if k in best}}
        shutil.copytree(scratch, tmp, dirs_exist_ok=True)


def main(ds: str) -> None:
    params = load_params()
    params.check_dataset(ds)
    cfg = params.head

    manifest, classes = load_manifest(Path("data/prepared") / ds)
    X, y = load_training_data(Path("data/embeddings") / ds, manifest)

    head = TorchHead(hidden=cfg.hidden, dropout=cfg.dropout, lr=cfg.lr, weight_decay=cfg.weight_decay,
                     batch_size=cfg.batch_size, max_epochs=cfg.max_epochs, patience=cfg.patience,
                     refit=cfg.refit, random_state=cfg.seed)
    head.fit(X["train"], y["train"], X["val"], y["val"], desc=f"train_head {ds}")
    missing = sorted(set(classes) - set(head.classes_))
    if missing:
        print(f"train_head@{ds}: warning: no training images for {', '.join(missing)}", file=sys.stderr)

    head.save(Path("data/models") / ds / "head.pt")
    write_curves(Path("metrics") / ds / "train_head", head.history_, head.best_epoch_,
                 title=f"train_head@{ds}: hidden {cfg.hidden}, dropout {cfg.dropout}, lr {cfg.lr}"
                       + (" (then refit on train+val up to the best epoch)" if cfg.refit else ""))
    best = head.history_[head.best_epoch_ - 1]
    print(f"train_head@{ds}: best epoch {head.best_epoch_} of {len(head.history_)} (val loss "
          f"{best.get('val_loss', float('nan')):.4f}, val top1 {best.get('val_accuracy', float('nan')):.3f})"
          f"{', refit on train+val' if cfg.refit else ''}", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
