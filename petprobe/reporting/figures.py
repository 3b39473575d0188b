"""PNG figures that can be read offline: captioned thumbnail grids and training curves.

Drawn on a ``matplotlib.figure.Figure`` (Agg canvas, no pyplot state) for evaluate and train_head,
and written with ``save_figure``. Every function returns a figure; none reads params or writes
outside ``save_figure``. (Render's pixel-exact tensor sheets are ``probing.sheets``.)
"""

from __future__ import annotations

import io
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image, ImageOps

from petprobe.data.images import load_rgb
from petprobe.labels import class_index
from petprobe.outputs import atomic_path

__all__ = ["Tile", "image_grid", "misclassified_grid", "class_samples_grid", "training_curves", "save_figure"]

DPI = 100
MIN_WIDTH = 6.0  # inches: room for a title of about 60 characters


@dataclass(frozen=True)
class Tile:
    """One image of a grid with its caption (and caption colour)."""

    path: str
    caption: str
    color: str = "black"


def _thumbnail(path: str, pixels: int) -> np.ndarray:
    try:
        image = load_rgb(path)
    except OSError:
        return np.full((pixels, pixels, 3), 200, np.uint8)  # a grey tile beats a failed report
    # Square centre crops line up in a grid; the subject of a pet photo is nearly always central.
    return np.asarray(ImageOps.fit(image, (pixels, pixels), Image.Resampling.BICUBIC))


def _short(name: str, width: int = 18) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def image_grid(tiles: list[Tile], *, title: str, columns: int = 8, tile_inches: float = 1.0,
               caption_lines: int = 1, empty_note: str = "nothing to show") -> Figure:
    """A grid of square thumbnails, row by row, each with its caption above it.

    At least ``MIN_WIDTH`` inches wide, with constrained layout and a wrapped title, so a grid
    of one tile still shows its whole title and captions.
    """
    columns = max(1, min(columns, len(tiles)))
    rows = max(1, math.ceil(len(tiles) / columns))
    width = max(columns * (tile_inches + 0.15) + 0.3, MIN_WIDTH)
    title = textwrap.fill(title, width=int(width * 11))  # about 11 characters per inch at 9 pt
    header = 0.25 + 0.16 * title.count("\n")
    height = header + rows * (tile_inches + 0.05 + 0.13 * caption_lines + 0.1) + 0.1
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    fig.suptitle(title, fontsize=9)
    if not tiles:
        fig.text(0.5, 0.4, empty_note, ha="center", va="center", fontsize=9)
        return fig
    pixels = round(tile_inches * DPI)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, tile in zip(axes.flat, tiles):
        ax.imshow(_thumbnail(tile.path, pixels), interpolation="none")
        ax.set_title(tile.caption, fontsize=6.5, color=tile.color, pad=2, linespacing=1.1)
    return fig


def misclassified_grid(paths, actual, proba: np.ndarray, classes: list[str], *, limit: int, title: str) -> Figure:
    """The ``limit`` most confident mistakes: true label, predicted label and both probabilities."""
    classes = list(classes)
    actual = np.asarray(actual)
    truth = class_index(actual, classes)
    pred = proba.argmax(axis=1)
    wrong = np.flatnonzero(pred != truth)
    # Most confident mistakes first: the ones a user should look at.
    wrong = wrong[np.argsort(-proba[wrong, pred[wrong]], kind="stable")][:limit]
    tiles = [Tile(paths[i], f"true {_short(actual[i])} ({proba[i, truth[i]]:.2f})\n"
                            f"pred {_short(classes[pred[i]])} ({proba[i, pred[i]]:.2f})", "firebrick")
             for i in wrong]
    return image_grid(tiles, title=title, columns=4, tile_inches=1.5, caption_lines=2,
                      empty_note="no misclassified test images")


def class_samples_grid(paths, labels, classes: list[str], *, per_class: int, title: str) -> Figure:
    """The first ``per_class`` images of every class (in manifest order), grouped by class."""
    labels = np.asarray(labels)
    tiles = []
    for name in classes:
        for i in np.flatnonzero(labels == name)[:per_class]:
            tiles.append(Tile(paths[i], _short(name, 16)))
    # Small tiles: this grid holds every class, and the PNG is tracked in git.
    return image_grid(tiles, title=title, columns=per_class if per_class > 1 else 8, tile_inches=0.8)


def training_curves(history: list[dict], *, best_epoch: int, title: str) -> Figure:
    """Loss and accuracy per epoch, train vs validation, with the kept epoch marked."""
    fig = Figure(figsize=(9, 3.4), dpi=90, layout="constrained")
    fig.suptitle(title, fontsize=10)
    epochs = [r["epoch"] for r in history]
    for k, metric in enumerate(("loss", "accuracy")):
        ax = fig.add_subplot(1, 2, k + 1)
        for split in ("train", "val"):
            values = [r.get(f"{split}_{metric}") for r in history]
            if any(v is not None for v in values):
                ax.plot(epochs, values, label=split)
        ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def reliability_diagram(tables: dict[str, list[dict]], *, title: str) -> Figure:
    """Accuracy against mean confidence per confidence bin (``calibration.reliability_table`` rows), one
    line per named table (e.g. before and after temperature scaling), marker area by image count; the
    diagonal is perfect calibration."""
    fig = Figure(figsize=(4.6, 4.2), dpi=90, layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    for name, rows in tables.items():
        ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], marker="o", label=name)
        ax.scatter([r["confidence"] for r in rows], [r["accuracy"] for r in rows],
                   s=[8 + 4 * r["n"] for r in rows], alpha=0.3)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="mean confidence in the bin (top label)", ylabel="accuracy in the bin")
    ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(title, fontsize=9)
    return fig


def save_figure(fig: Figure, path: str | Path) -> None:
    """Write ``fig`` as an RGB PNG, atomically; no timestamp or version in it, so reruns are identical.

    Every text is drawn as plain text: class names and file names come from folder and file names,
    and matplotlib would read ``$...$`` in them as mathtext (``$\\foo$`` made evaluate crash).
    """
    for text in fig.findobj(Text):
        text.set_parse_math(False)
    buffer = io.BytesIO()
    with rc_context({"text.parse_math": False}):  # texts made while drawing (tick labels) as well
        fig.savefig(buffer, format="png")
    image = Image.open(buffer).convert("RGB")  # the alpha channel of Agg's RGBA only adds bytes
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", optimize=True)
