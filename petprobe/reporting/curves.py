"""A head's per-epoch training curves, logged with DVCLive (DVC plots) and drawn as one PNG."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from dvclive import Live

from petprobe.outputs import atomic_dir
from petprobe.reporting.figures import training_curves

__all__ = ["write_curves"]


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


def write_curves(out_dir: Path, history: list[dict], best_epoch: int, title: str, *, refit: bool = False) -> None:
    """Log the epochs with DVCLive, then publish its folder atomically as ``out_dir``.

    The summary's val numbers belong to the early-stopping run's kept epoch; with ``refit`` the
    saved model is another one (retrained on train+val for ``best_epoch`` epochs, so it has no val
    score), and the keys say so: ``early_stopping_val_*`` and ``saved_model``.
    """
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
            prefix = "early_stopping_" if refit else ""
            live.summary = {"best_epoch": best_epoch, "epochs_run": len(history),
                            **{prefix + k: round(best[k], 6) for k in ("val_loss", "val_accuracy") if k in best},
                            "saved_model": f"refit on train+val for {best_epoch} epochs" if refit
                            else f"epoch {best_epoch} of the early-stopping run (trained on train)"}
        shutil.copytree(scratch, tmp, dirs_exist_ok=True)
