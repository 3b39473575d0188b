"""What `petprobe study` writes to metrics/study/ and the report page reads back: the table (study.csv,
and study.md for people), its two figures, and the sentence saying what the columns measure.

Kept apart from petprobe.reporting.study, which runs experiments and builds backbones, so the report
stage's code (and DVC's deps of it) does not reach the backbones and the downloader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from petprobe.catalogue import LOGREG
from petprobe.errors import PetprobeError

__all__ = ["STUDY_COLUMNS", "STUDY_FIGURES", "study_note", "study_figure", "markdown_table", "write_study",
           "read_written_study"]

STUDY_COLUMNS = ("backbone", "dataset", "probe", "top1", "top1_lo", "top1_hi", "bacc", "bacc_lo", "bacc_hi",
                 "log_loss", "ece", "n_test", "imagenet_acc1", "params_m", "img_per_s", "experiment")
# The two figures, by file name, and what their x axis is.
STUDY_FIGURES = {"accuracy_vs_imagenet.png": "imagenet_acc1", "accuracy_vs_throughput.png": "img_per_s"}
_ROUNDING = {"top1": 3, "top1_lo": 3, "top1_hi": 3, "bacc": 3, "bacc_lo": 3, "bacc_hi": 3, "log_loss": 3, "ece": 3,
             "params_m": 1, "img_per_s": 1}


def study_figure(table: pd.DataFrame, x: str, *, head: str = LOGREG.name):
    """Probe top-1 (95 % interval bars) against ``x`` (``imagenet_acc1`` or ``img_per_s``), one colour per dataset."""
    from matplotlib.figure import Figure

    labels = {"imagenet_acc1": "ImageNet-1k top-1 (%, published)", "img_per_s": "embedding throughput (images/s)"}
    fig = Figure(figsize=(6, 4.2))
    ax = fig.add_subplot()
    rows = table[(table["probe"] == head) & table[x].notna()]
    for ds, group in rows.groupby("dataset"):
        ax.errorbar(group[x], group["top1"], yerr=[group["top1"] - group["top1_lo"], group["top1_hi"] - group["top1"]],
                    fmt="o", capsize=3, label=ds)
        for _, row in group.iterrows():
            ax.annotate(row["backbone"], (row[x], row["top1"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set_xlabel(labels[x])
    ax.set_ylabel(f"{head} top-1 on the test split (95% interval)")
    if rows.empty:
        ax.text(0.5, 0.5, f"no backbone with {labels[x]}", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(title="dataset", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub markdown table of ``frame`` (NaN shown as -)."""
    cells = [[("-" if isinstance(v, float) and np.isnan(v) else str(v)) for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def study_note(n_photos: int | None = None) -> str:
    """What the table's columns measure, and on which images."""
    photos = f"{n_photos} embedded-sample photos" if n_photos else "the embedded sample's photos"
    return (f"top-1 and balanced accuracy on each dataset's test split, 95% intervals as evaluate computes them; "
            f"img_per_s: embedding throughput on {photos}, fp32, on the machine that ran the study; "
            f"imagenet_acc1: published ImageNet-1k top-1 (%); params_m: millions of parameters")


def write_study(table: pd.DataFrame, out: Path, n_photos: int) -> list[Path]:
    """study.csv (full precision), study.md (rounded, with the note) and the two figures in ``out``."""
    from petprobe.outputs import write_csv, write_text
    from petprobe.reporting.figures import save_figure

    shown = table.drop(columns=["experiment"]).round(_ROUNDING)
    written = [out / "study.csv", out / "study.md", *(out / name for name in STUDY_FIGURES)]
    write_csv(written[0], table)
    write_text(written[1], "# Backbone study\n\n" + markdown_table(shown) + f"\n\n{study_note(n_photos)}\n")
    for name, x in STUDY_FIGURES.items():
        save_figure(study_figure(table, x), out / name)
    return written


def read_written_study(out: Path) -> tuple[pd.DataFrame, dict[str, bytes]] | None:
    """The study as ``write_study`` left it (table, figures by file name); None when there is none."""
    if not (out / "study.csv").is_file():
        return None
    table = pd.read_csv(out / "study.csv")
    missing = sorted(set(STUDY_COLUMNS) - set(table.columns))
    if missing:
        raise PetprobeError(f"{out / 'study.csv'} lacks columns {', '.join(missing)}; rerun `petprobe study --compare-only`")
    figures = {name: (out / name).read_bytes() for name in STUDY_FIGURES if (out / name).is_file()}
    return table, figures
