"""The explain stage's pictures: attribution overlays, feature-map grids, sanity rows, curves.

Each function returns a ``matplotlib.figure.Figure`` (Agg, no pyplot state), written by the stage
with ``reporting.figures.save_figure``. Maps are drawn per image from 0 to their own maximum
(``jet``, half transparent over the photo): the colours say where, not how much across images.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from petprobe.probing.measures import TRIMAP_PET

__all__ = ["attribution_figure", "feature_map_figure", "sanity_figure", "curves_figure"]

_LABELS = {"grad_cam": "Grad-CAM", "integrated_gradients": "Integrated gradients", "random": "random order",
           "original": "trained", "head": "head re-drawn", "head_last_block": "head + last block re-drawn"}


def _rgb(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).clamp(0, 1).numpy()


def _overlay(ax, image: torch.Tensor, heat: torch.Tensor | None, trimap: torch.Tensor | None = None) -> None:
    ax.imshow(_rgb(image))
    if heat is not None:
        peak = float(heat.max())
        ax.imshow((heat / peak if peak > 0 else heat).numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
    if trimap is not None:
        ax.contour((trimap == TRIMAP_PET).numpy().astype(float), levels=[0.5], colors="white", linewidths=0.8)
    ax.set_axis_off()


def _grid(rows: int, cols: int, title: str, cell: float = 1.6, caption: float = 0.35) -> tuple[Figure, np.ndarray]:
    # The title's band (inches) holds every line of it, and the first row's captions sit below it,
    # so a two-line title never runs into them.
    band = 0.1 + (title.count("\n") + 1) * 8 * 1.3 / 72
    fig = Figure(figsize=(cols * cell, rows * (cell + caption) + band), dpi=100)
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False))
    height = fig.get_figheight()
    fig.suptitle(title, fontsize=8, y=1 - 0.05 / height, va="top")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - (band + caption) / height, wspace=0.04,
                        hspace=caption / cell + 0.08)
    return fig, axes


def attribution_figure(images: torch.Tensor, captions: list[str], maps: dict[str, torch.Tensor], *, title: str,
                       trimaps: torch.Tensor | None = None) -> Figure:
    """One row per image: the photo (its caption), then its map under each method, overlaid."""
    fig, axes = _grid(len(images), 1 + len(maps), title)
    for i, image in enumerate(images):
        trimap = None if trimaps is None else trimaps[i]
        _overlay(axes[i, 0], image, None, trimap)
        axes[i, 0].set_title(captions[i], fontsize=6)
        for j, (name, m) in enumerate(maps.items(), start=1):
            _overlay(axes[i, j], image, m[i], trimap)
            axes[i, j].set_title(_LABELS.get(name, name), fontsize=6)
    return fig


def feature_map_figure(images: torch.Tensor, depths: list[list[tuple[str, torch.Tensor]]], *, channels: int,
                       title: str) -> Figure:
    """Per image, one row per depth: the photo, then the ``channels`` most active channels there."""
    rows = sum(len(d) for d in depths)
    fig, axes = _grid(rows, 1 + channels, title, cell=1.0, caption=0.3)
    r = 0
    for image, levels in zip(images, depths):
        for name, activation in levels:
            axes[r, 0].imshow(_rgb(image))
            axes[r, 0].set_title(f"{name}\n{tuple(activation.shape)}", fontsize=5)
            axes[r, 0].set_axis_off()
            for c in range(channels):
                ax = axes[r, 1 + c]
                if c < len(activation):
                    ax.imshow(activation[c].float().numpy(), cmap="viridis")
                    ax.set_title(f"ch {c + 1}", fontsize=5)
                ax.set_axis_off()
            r += 1
    return fig


def sanity_figure(images: torch.Tensor, maps: dict[str, dict[str, torch.Tensor]], *, title: str) -> Figure:
    """One row per (image, method): the map of the trained model, then of each re-drawn model."""
    parts = list(next(iter(maps.values())))
    fig, axes = _grid(len(images) * len(maps), 1 + len(parts), title)
    r = 0
    for i, image in enumerate(images):
        for name, by_part in maps.items():
            _overlay(axes[r, 0], image, None)
            axes[r, 0].set_title(_LABELS.get(name, name), fontsize=6)
            for j, part in enumerate(parts, start=1):
                _overlay(axes[r, j], image, by_part[part][i])
                axes[r, j].set_title(_LABELS.get(part, part), fontsize=6)
            r += 1
    return fig


def curves_figure(curves: dict[str, list[dict]], *, title: str) -> Figure:
    """Mean deletion and insertion curves, one line per ranking (the methods and random order)."""
    fig = Figure(figsize=(8, 3.2), dpi=100)
    axes = fig.subplots(1, len(curves))
    fig.suptitle(title, fontsize=8)
    for ax, (kind, rows) in zip(np.atleast_1d(axes), curves.items()):
        x = [row["fraction"] for row in rows]
        for name in (k for k in rows[0] if k != "fraction"):
            ax.plot(x, [row[name] for row in rows], label=_LABELS.get(name, name),
                    linestyle="--" if name == "random" else "-")
        ax.set_xlabel(f"fraction of pixels {'deleted' if kind == 'deletion' else 'inserted'}", fontsize=7)
        ax.set_ylabel("mean p(predicted class)", fontsize=7)
        ax.set_title(kind, fontsize=8)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig
