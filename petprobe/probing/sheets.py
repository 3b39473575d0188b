"""Pixel-exact sheets of [0,1] image tensors with captions (render's ideal and attack images).

Ideal images and adversarial perturbations must be shown without resampling blur, so
``tensor_sheet`` pastes them with PIL at full size instead of drawing them with matplotlib.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from petprobe.probing.attacks import quantize

__all__ = ["to_pil", "amplify", "sheet_amplification", "tensor_sheet", "ideal_sheet", "attack_sheet"]


_CAPTION_LINE = 14  # pixels per caption line
_FONT_SIZE = 12


def to_pil(image: torch.Tensor) -> Image.Image:
    """A [0,1] tensor ``(3, H, W)`` as an 8-bit RGB image."""
    # The same 8-bit rounding as the saved adversarial PNGs, so a sheet shows what was measured.
    return Image.fromarray(np.ascontiguousarray(quantize(image[None])[0].numpy()), "RGB")


def amplify(delta: torch.Tensor, factor: float) -> torch.Tensor:
    """A perturbation ``(3, H, W)`` made visible: 0 is grey, ``delta * factor`` added, clipped to [0,1].

    One ``factor`` for every perturbation of a sheet, so a 1/255 and an 8/255 perturbation look
    as different as they are.
    """
    return (0.5 + delta * factor).clamp(0, 1)


def sheet_amplification(deltas: Sequence[torch.Tensor]) -> int:
    """The whole-number factor that maps the largest ``|delta|`` of ``deltas`` to (nearly) full range."""
    peak = max((float(d.abs().max()) for d in deltas), default=0.0)
    return max(1, math.floor(0.5 / peak)) if peak > 0 else 1


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
    """Two rows per image, one column per attack (plus the original): adversarial images, then perturbations.

    Every perturbation of the sheet is amplified by one factor, printed on it, chosen so the
    largest bounded (PGD) perturbation fills the range; larger ones (the unbounded attack) clip.
    """
    s, t = classes.index(source), classes.index(target)
    bounded = [adv - images for name, adv in adversarial.items() if name.startswith("pgd")]
    factor = sheet_amplification(bounded or [adv - images for adv in adversarial.values()])
    rows = []
    for i, image in enumerate(images):
        pictures = [(image, f"original\np({source}) = {p_clean[i, s]:.3f}")]
        perturbations = [(None, f"perturbations, right:\nx{factor}, grey = 0")]
        for name, adv in adversarial.items():
            delta = adv[i] - image
            top = classes[int(p_adversarial[name][i].argmax())]
            pictures.append((adv[i], f"{name}: p({target}) = {p_adversarial[name][i, t]:.3f}\npredicted {top}"))
            clipped = ", clipped" if float(delta.abs().max()) * factor > 0.5 + 1e-6 else ""
            perturbations.append((amplify(delta, factor),
                                  f"{name} perturbation\nL-inf {delta.abs().max() * 255:.1f}/255{clipped}"))
        rows += [pictures, perturbations]
    return tensor_sheet(rows, title=f"Targeted attacks {source} -> {target}: adversarial images, and below each "
                                  f"its perturbation amplified x{factor} (the same for every attack of this sheet)")
