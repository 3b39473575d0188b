"""PNG figures that can be read offline.

Two kinds of grid, for two jobs:
- thumbnails of image files with captions and training curves (evaluate, train_head), drawn on a
  ``matplotlib.figure.Figure`` (Agg canvas, no pyplot state) and written with ``save_figure``;
- pixel-exact sheets of [0,1] tensors (render): ideal images and adversarial perturbations must be
  shown without resampling blur, so ``tensor_sheet`` pastes them with PIL at full size.
Every function returns a figure or image; none reads params or writes outside ``save_figure``.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont, ImageOps

from stages.attacks import quantize
from stages.images import load_rgb
from stages.outputs import atomic_path

__all__ = ["Tile", "image_grid", "misclassified_grid", "class_samples_grid", "training_curves", "save_figure",
           "to_pil", "amplify", "tensor_sheet", "ideal_sheet", "attack_sheet"]

DPI = 100


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
    """A grid of square thumbnails, row by row, each with its caption above it."""
    columns = max(1, min(columns, len(tiles)))
    rows = max(1, math.ceil(len(tiles) / columns))
    gap, caption, header = 0.08, 0.05 + 0.12 * caption_lines, 0.35  # inches
    width = columns * (tile_inches + gap) + gap
    height = header + rows * (tile_inches + caption + gap)
    fig = Figure(figsize=(max(width, 3.0), height), dpi=DPI)
    fig.text(0.5, 1 - 0.2 / height, title, ha="center", va="center", fontsize=9)
    if not tiles:
        fig.text(0.5, 0.4, empty_note, ha="center", va="center", fontsize=9)
        return fig
    pixels = round(tile_inches * DPI)
    W, H = fig.get_figwidth(), height
    for i, tile in enumerate(tiles):
        row, col = divmod(i, columns)
        left = gap + col * (tile_inches + gap) + (W - width) / 2
        top = header + row * (tile_inches + caption + gap) + caption
        ax = fig.add_axes((left / W, 1 - (top + tile_inches) / H, tile_inches / W, tile_inches / H))
        ax.imshow(_thumbnail(tile.path, pixels), interpolation="none")
        ax.set_title(tile.caption, fontsize=6.5, color=tile.color, pad=2, linespacing=1.1)
        ax.set_axis_off()
    return fig


def misclassified_grid(paths, actual, proba: np.ndarray, classes: list[str], *, limit: int, title: str) -> Figure:
    """The ``limit`` most confident mistakes: true label, predicted label and both probabilities."""
    classes = list(classes)
    actual = np.asarray(actual)
    index = {c: i for i, c in enumerate(classes)}
    pred = proba.argmax(axis=1)
    wrong = np.flatnonzero(pred != np.array([index[a] for a in actual]))
    # Most confident mistakes first: the ones a user should look at.
    wrong = wrong[np.argsort(-proba[wrong, pred[wrong]], kind="stable")][:limit]
    tiles = [Tile(paths[i], f"true {_short(actual[i])} ({proba[i, index[actual[i]]]:.2f})\n"
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
    fig = Figure(figsize=(9, 3.4), dpi=90)
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
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | Path) -> None:
    """Write ``fig`` as an RGB PNG, atomically; no timestamp or version in it, so reruns are identical."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    image = Image.open(buffer).convert("RGB")  # the alpha channel of Agg's RGBA only adds bytes
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", optimize=True)


# --- pixel-exact sheets of tensors (render) ---------------------------------------------------

_CAPTION_LINE = 14  # pixels per caption line
_FONT_SIZE = 12


def to_pil(image: torch.Tensor) -> Image.Image:
    """A [0,1] tensor ``(3, H, W)`` as an 8-bit RGB image."""
    # The same 8-bit rounding as the saved adversarial PNGs, so a sheet shows what was measured.
    return Image.fromarray(np.ascontiguousarray(quantize(image[None])[0].numpy()), "RGB")


def amplify(delta: torch.Tensor) -> torch.Tensor:
    """A perturbation ``(3, H, W)`` made visible: 0 is grey, its largest |value| is black or white."""
    peak = float(delta.abs().max())
    return 0.5 + delta / (2 * peak) if peak > 0 else torch.full_like(delta, 0.5)


def tensor_sheet(rows: Sequence[Sequence[tuple[torch.Tensor | None, str]]], *, cell: int = 224,
               title: str = "") -> Image.Image:
    """One PNG-ready image: rows of ``(image or None, caption)`` cells, captions (lines split on ``\\n``) below.

    Images are shown at ``cell`` x ``cell`` pixels; a smaller one is enlarged with nearest-neighbour
    so single-pixel structure (a perturbation) stays visible.
    """
    font = ImageFont.load_default(size=_FONT_SIZE)
    n_cols = max(len(row) for row in rows)
    n_lines = max((caption.count("\n") + 1 for row in rows for _, caption in row), default=1)
    pad, row_h = 4, cell + n_lines * _CAPTION_LINE + 8
    top = _CAPTION_LINE + 8 if title else 0
    sheet = Image.new("RGB", (n_cols * (cell + pad) + pad, top + len(rows) * row_h + pad), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, 4), title, fill="black", font=font)
    for r, row in enumerate(rows):
        for c, (image, caption) in enumerate(row):
            x, y = pad + c * (cell + pad), top + pad + r * row_h
            if image is not None:
                picture = to_pil(image)
                if picture.size != (cell, cell):
                    picture = picture.resize((cell, cell), Image.Resampling.NEAREST)
                sheet.paste(picture, (x, y))
            for i, line in enumerate(caption.split("\n")):
                draw.text((x, y + cell + 2 + i * _CAPTION_LINE), line, fill="black", font=font)
    return sheet


def ideal_sheet(ideal: dict[str, tuple[torch.Tensor, list[str], torch.Tensor]]) -> Image.Image:
    """One row per method (``{"pixel": (images, class names, p(target)), ...}``), one column per class."""
    rows = [[(image, f"{method}: {name}\np = {p:.3f}") for image, name, p in zip(images, names, probs.tolist())]
            for method, (images, names, probs) in ideal.items()]
    return tensor_sheet(rows, title="Images optimised for one class each; p = that class's probability")


def attack_sheet(images: torch.Tensor, adversarial: dict[str, torch.Tensor], p_clean: torch.Tensor,
                 p_adversarial: dict[str, torch.Tensor], classes: list[str], source: str, target: str) -> Image.Image:
    """One row per image: the original, then (amplified perturbation, adversarial image) per attack."""
    s, t = classes.index(source), classes.index(target)
    rows = []
    for i, image in enumerate(images):
        row = [(image, f"original\np({source}) = {p_clean[i, s]:.3f}")]
        for name, adv in adversarial.items():
            delta = adv[i] - image
            row.append((amplify(delta), f"{name}: perturbation\nL-inf {delta.abs().max() * 255:.1f}/255, amplified"))
            top = classes[int(p_adversarial[name][i].argmax())]
            row.append((adv[i], f"{name}: p({target}) = {p_adversarial[name][i, t]:.3f}\npredicted {top}"))
        rows.append(row)
    return tensor_sheet(rows, title=f"Targeted attacks {source} -> {target}: original | perturbation (scaled to "
                                  f"full range) | adversarial, per attack")
