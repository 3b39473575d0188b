"""Pixel-exact sheets of [0,1] image tensors with captions (render's ideal and attack images).

Ideal images and adversarial perturbations must be shown without resampling blur, so
``tensor_sheet`` pastes them with PIL at full size instead of drawing them with matplotlib.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from petprobe.probing.attacks import quantize

__all__ = ["to_pil", "amplify", "tensor_sheet", "ideal_sheet", "attack_sheet"]


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
