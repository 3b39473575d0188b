"""Feature visualisation: optimise an image so a classifier sees a class in it (the Lucid idea).

Four parts, each replaceable:

- **parametrisations** return ``(params, image_f)``: the leaf tensors Adam updates and a closure
  building the ``(N, 3, H, W)`` image, always in [0,1] through a sigmoid. ``pixel_image`` is one
  free value per pixel; ``fourier_image`` holds a spectrum scaled by 1/frequency and decorrelated
  colours, which favours natural-looking, low-frequency images;
- **transforms** are factories returning ``inner(image, generator)`` closures (``pad``,
  ``jitter``, ``random_scale``, ``random_rotate``, composed by ``standard_transforms``, the
  optimisation's; ``random_resized_crop``, ``random_flip``, ``color_jitter``, composed by
  ``heldout_transforms``, a family the images are judged under but never optimised for); their
  randomness comes from the generator ``render`` seeds, so a seed reproduces an image exactly;
- **objectives** map ``(logits, image)`` to one score per image and combine with ``+ - *``:
  ``class_log_prob(targets) - 0.05 * total_variation()``;
- ``render(model, objective, param_f, transforms, steps=, lr=, seed=)`` runs Adam and returns
  the images as a tensor. Writing files is the caller's job.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from petprobe.progress import progress

__all__ = ["pixel_image", "fourier_image", "color_sqrt", "pad", "jitter", "random_scale", "random_rotate",
           "compose", "standard_transforms", "crop_resize", "adjust_color", "random_resized_crop", "random_flip",
           "color_jitter", "heldout_transforms", "Objective", "class_logit", "class_log_prob", "total_variation",
           "l2", "render", "ideal_images", "IdealTarget", "Judge", "ideal_images_of", "ideal_summary", "p_target_under_transforms"]

Shape = tuple[int, int, int, int]


# --- parametrisations -----------------------------------------------------------------------------


def pixel_image(shape: Shape, *, sd: float = 0.01, generator: torch.Generator | None = None, device="cpu"):
    """One free value per pixel and channel; the image is their sigmoid (grey at the start)."""
    logits = (torch.randn(shape, generator=generator) * sd).to(device).requires_grad_(True)
    return [logits], lambda: torch.sigmoid(logits)


def fourier_image(shape: Shape, *, sd: float = 0.01, decay_power: float = 1.0, color: torch.Tensor | None = None,
                  generator: torch.Generator | None = None, device="cpu"):
    """A spectrum per channel, scaled by 1/frequency**decay_power, in decorrelated colour space.

    Equal steps on every coefficient then change coarse structure much more than fine detail, and
    a step along one colour axis moves along a principal direction of natural-image colour
    (``color``, from ``color_sqrt``; identity when None), so the optimum found looks less like
    high-frequency noise than a pixel-space one.
    """
    n, c, h, w = shape
    freq = torch.sqrt(torch.fft.fftfreq(h)[:, None] ** 2 + torch.fft.rfftfreq(w)[None, :] ** 2)
    # Clamp the zero frequency (the mean colour) to the lowest non-zero one instead of infinity, and
    # scale to unit RMS so a white-noise spectrum of std sd gives pixels of std ~sd at any size.
    scale = 1.0 / freq.clamp(min=1.0 / max(h, w)) ** decay_power
    scale = (scale / scale.pow(2).mean().sqrt()).to(device)
    spectrum = (torch.randn((n, c, *freq.shape, 2), generator=generator) * sd).to(device).requires_grad_(True)
    color = (torch.eye(c) if color is None else color).to(device)

    def image_f():
        coefficients = torch.view_as_complex(spectrum) * scale
        # ortho: a coefficient's step moves the pixels by the same amount whatever the image size.
        decorrelated = torch.fft.irfft2(coefficients, s=(h, w), norm="ortho")
        return torch.sigmoid(torch.einsum("ij,njhw->nihw", color, decorrelated))

    return [spectrum], image_f


def color_sqrt(images: torch.Tensor) -> torch.Tensor:
    """Square root of the RGB covariance of ``images`` (N, 3, H, W), scaled to unit largest column norm.

    Multiplying independent unit-variance channels by it gives colours correlated like the
    images' own; the scaling keeps a unit step a unit step.
    """
    pixels = images.permute(1, 0, 2, 3).flatten(1).double()
    values, vectors = torch.linalg.eigh(torch.cov(pixels))
    root = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    return (root / root.norm(dim=0).max()).float()


# --- transforms ---------------------------------------------------------------------------------

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _choice(options: Sequence, generator: torch.Generator):
    return options[int(torch.randint(len(options), (1,), generator=generator))]


def pad(width: int, value: float = 0.5) -> Transform:
    """Pad every side by ``width`` pixels of constant ``value`` (grey), so jitter never wraps content."""
    def inner(image, generator):
        return F.pad(image, (width,) * 4, value=value)
    return inner


def jitter(d: int) -> Transform:
    """Random crop that is ``d`` pixels smaller in each direction (a shift of 0..d pixels)."""
    def inner(image, generator):
        dx, dy = (int(v) for v in torch.randint(d + 1, (2,), generator=generator))
        h, w = image.shape[-2:]
        return image[..., dy:h - d + dy, dx:w - d + dx]
    return inner


def random_scale(scales: Sequence[float]) -> Transform:
    """Resize by a factor drawn from ``scales`` (bilinear)."""
    def inner(image, generator):
        factor = float(_choice(scales, generator))
        if factor == 1.0:
            return image
        return F.interpolate(image, scale_factor=factor, mode="bilinear", align_corners=False)
    return inner


def random_rotate(angles: Sequence[float]) -> Transform:
    """Rotate about the centre by an angle in degrees drawn from ``angles`` (edges repeat the border)."""
    def inner(image, generator):
        angle = math.radians(float(_choice(angles, generator)))
        if angle == 0.0:
            return image
        cos, sin = math.cos(angle), math.sin(angle)
        theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=image.dtype, device=image.device)
        grid = F.affine_grid(theta.expand(len(image), 2, 3), list(image.shape), align_corners=False)
        return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return inner


def compose(transforms: Sequence[Transform]) -> Transform:
    def inner(image, generator):
        for transform in transforms:
            image = transform(image, generator)
        return image
    return inner


def standard_transforms() -> list[Transform]:
    """Small random shifts, scalings and rotations each step: the image must work under all of them."""
    return [pad(12), jitter(8), random_scale([1 + (i - 5) / 50 for i in range(11)]),
            random_rotate(list(range(-10, 11)) + 5 * [0]), jitter(4)]


# The held-out family: what the images are judged under, never optimised under. Zooms of 1.2-1.6x
# on random crops (the optimisation's scales are 0.9-1.1, with grey padding), mirror images and
# colour changes (the optimisation has none).


def crop_resize(image: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """The ``height`` x ``width`` region at (``top``, ``left``), resized (bilinear) to the image's size."""
    h, w = image.shape[-2:]
    return F.interpolate(image[..., top:top + height, left:left + width], size=(h, w), mode="bilinear",
                         align_corners=False)


def _gray(image: torch.Tensor) -> torch.Tensor:
    r, g, b = image.unbind(-3)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(-3)  # ITU-R 601-2 luma, as PIL's "L" mode


def adjust_color(image: torch.Tensor, brightness: float = 1.0, contrast: float = 1.0,
                 saturation: float = 1.0) -> torch.Tensor:
    """Brightness (scale), then contrast (blend with the mean grey level of each image), then
    saturation (blend with each pixel's grey), each clipped to [0, 1]; factor 1 leaves the image."""
    image = (image * brightness).clamp(0, 1)
    mean = _gray(image).mean(dim=(-3, -2, -1), keepdim=True)
    image = (contrast * image + (1 - contrast) * mean).clamp(0, 1)
    return (saturation * image + (1 - saturation) * _gray(image)).clamp(0, 1)


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def random_resized_crop(area: tuple[float, float] = (0.4, 0.7),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Transform:
    """A random region of ``area`` (a share of the image, uniform) and aspect ``ratio`` (log-uniform),
    resized back to the full size: zooms of 1/sqrt(area)."""
    def inner(image, generator):
        h, w = image.shape[-2:]
        size = _uniform(*area, generator) * h * w
        aspect = math.exp(_uniform(math.log(ratio[0]), math.log(ratio[1]), generator))
        height = max(1, min(h, round(math.sqrt(size / aspect))))
        width = max(1, min(w, round(math.sqrt(size * aspect))))
        top, left = (int(torch.randint(n + 1, (), generator=generator)) for n in (h - height, w - width))
        return crop_resize(image, top, left, height, width)
    return inner


def random_flip() -> Transform:
    """Mirror left-right with probability 1/2."""
    def inner(image, generator):
        return image.flip(-1) if float(torch.rand((), generator=generator)) < 0.5 else image
    return inner


def color_jitter(brightness: float = 0.3, contrast: float = 0.3, saturation: float = 0.3) -> Transform:
    """``adjust_color`` with each factor uniform in [1 - x, 1 + x]."""
    def inner(image, generator):
        factors = [_uniform(1 - x, 1 + x, generator) for x in (brightness, contrast, saturation)]
        return adjust_color(image, *factors)
    return inner


def heldout_transforms() -> list[Transform]:
    """The judging family: random crops zoomed 1.2-1.6x, mirroring, brightness/contrast/saturation x0.7-1.3."""
    return [random_resized_crop((0.4, 0.7)), random_flip(), color_jitter(0.3, 0.3, 0.3)]


# --- objectives ---------------------------------------------------------------------------------


class Objective:
    """A score per image, ``fn(logits, image) -> (N,)``, to maximise; combine with ``+``, ``-``, ``*``."""

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], name: str):
        self.fn = fn
        self.name = name

    def __call__(self, logits, image):
        return self.fn(logits, image)

    def __add__(self, other: Objective) -> Objective:
        return Objective(lambda lo, im: self(lo, im) + other(lo, im), f"{self.name} + {other.name}")

    def __sub__(self, other: Objective) -> Objective:
        return Objective(lambda lo, im: self(lo, im) - other(lo, im), f"{self.name} - {other.name}")

    def __mul__(self, weight: float) -> Objective:
        return Objective(lambda lo, im: weight * self(lo, im), f"{weight:g} * {self.name}")

    __rmul__ = __mul__

    def __neg__(self) -> Objective:
        return -1.0 * self

    def __repr__(self) -> str:
        return self.name


def _rows(targets, logits):
    targets = torch.as_tensor(targets, device=logits.device)
    return torch.arange(len(logits), device=logits.device), targets


def class_logit(targets) -> Objective:
    """The logit of ``targets[i]`` for image i."""
    def fn(logits, image):
        rows, t = _rows(targets, logits)
        return logits[rows, t]
    return Objective(fn, "class_logit")


def class_log_prob(targets) -> Objective:
    """The log-softmax of ``targets[i]`` for image i: raising it also lowers every other class."""
    def fn(logits, image):
        rows, t = _rows(targets, logits)
        return logits.log_softmax(1)[rows, t]
    return Objective(fn, "class_log_prob")


def total_variation() -> Objective:
    """Mean absolute difference between neighbouring pixels (a cost: subtract it)."""
    def fn(logits, image):
        dy = (image[..., 1:, :] - image[..., :-1, :]).abs().flatten(1).mean(1)
        dx = (image[..., :, 1:] - image[..., :, :-1]).abs().flatten(1).mean(1)
        return dx + dy
    return Objective(fn, "total_variation")


def l2(center: float = 0.5) -> Objective:
    """Mean squared distance of the pixels from ``center`` (a cost: subtract it)."""
    return Objective(lambda logits, image: ((image - center) ** 2).flatten(1).mean(1), "l2")


# --- the loop -----------------------------------------------------------------------------------


def render(model: nn.Module, objective: Objective, param_f: Callable, transforms: Sequence[Transform] = (), *,
           steps: int = 128, lr: float = 0.05, seed: int = 0, device: torch.device | str = "cpu",
           desc: str = "render") -> torch.Tensor:
    """Maximise ``objective`` over the image ``param_f(generator=, device=)`` builds; return it ``(N, 3, H, W)``.

    ``model`` maps [0,1] images to logits; its weights are left untouched (gradients go to the
    image parameters only, and the model runs in eval mode, restored afterwards).
    """
    generator = torch.Generator().manual_seed(seed)
    params, image_f = param_f(generator=generator, device=device)
    transform = compose(transforms)
    optimizer = torch.optim.Adam(params, lr=lr)
    was_training = model.training
    model.eval()
    try:
        for _ in progress(range(steps), desc=desc, unit="step", leave=False):
            image = image_f()
            score = objective(model(transform(image, generator)), image).sum()
            # autograd.grad: only the image parameters get gradients, never the model's buffers.
            for param, grad in zip(params, torch.autograd.grad(-score, params)):
                param.grad = grad
            optimizer.step()
    finally:
        model.train(was_training)
    with torch.no_grad():
        return image_f().detach()


def ideal_images(model: nn.Module, targets: Sequence[int], *, size: int, steps: int, lr: float, seed: int,
                 tv_weight: float, l2_weight: float, color: torch.Tensor | None = None,
                 device: torch.device | str = "cpu", desc: str = "ideal") -> dict[str, torch.Tensor]:
    """One image per target class in each parametrisation: ``{"pixel": (N,3,size,size), "fourier": ...}``.

    ``pixel`` is the plain method, held back by total-variation and L2 penalties; ``fourier`` relies
    on its 1/f spectrum and decorrelated colours instead. Both use ``standard_transforms``.
    """
    shape = (len(targets), 3, size, size)
    goal = class_log_prob(list(targets))
    setups = {
        "pixel": (functools.partial(pixel_image, shape), goal - tv_weight * total_variation() - l2_weight * l2()),
        "fourier": (functools.partial(fourier_image, shape, color=color), goal),
    }
    return {name: render(model, objective, param_f, standard_transforms(), steps=steps, lr=lr, seed=seed,
                         device=device, desc=f"{desc} {name}")
            for name, (param_f, objective) in setups.items()}


@torch.no_grad()
def p_target_under_transforms(model: nn.Module, images: torch.Tensor, targets: Sequence[int],
                              transforms: Sequence[Transform], *, draws: int = 16, seed: int = 1) -> torch.Tensor:
    """Mean p(target) of each image over ``draws`` random draws of ``transforms`` from a generator
    seeded with ``seed`` (not the optimisation's), so the draws are ones the image was not fit to."""
    generator, transform = torch.Generator().manual_seed(seed), compose(transforms)
    rows, t = torch.arange(len(images)), torch.as_tensor(list(targets))
    was_training = model.training
    model.eval()
    try:
        p = [model(transform(images, generator)).float().softmax(1).cpu()[rows, t] for _ in range(draws)]
    finally:
        model.train(was_training)
    return torch.stack(p).mean(0)


@dataclass(frozen=True)
class Judge:
    """Another model that scores an ideal image: ``index`` of each target class among its outputs
    (None for a class it lacks)."""

    model: nn.Module
    index: list[int | None]


@dataclass(frozen=True)
class IdealTarget:
    """A model ideal images are optimised for: the classes (``names``, and their ``index`` among its
    outputs) and the other models that judge the images (``judges``, by name)."""

    model: nn.Module
    names: list[str]
    index: list[int]
    judges: dict[str, Judge] = field(default_factory=dict)


def ideal_images_of(targets: dict[str, IdealTarget], *, size: int, steps: int, lr: float, seed: int,
                    tv_weight: float, l2_weight: float, color: torch.Tensor | None = None, draws: int = 16,
                    device: torch.device | str = "cpu") -> tuple[dict, dict]:
    """``ideal_images`` for several models (``{prefix: IdealTarget}``).

    Returns ``({prefix + method: (images, names, p(target))}, {prefix + method: {name: {...}}})``: the
    images for the sheet and, for the report, per image p(target):

    - ``p_target_optimised``: the model and the exact image it was optimised for (high by construction);
    - ``p_target_optimisation_transforms``: that model, mean over ``draws`` new draws of the
      optimisation's own transform family (``standard_transforms``, another seed);
    - ``p_target_heldout_transforms``: that model, mean over ``draws`` draws of ``heldout_transforms``,
      a family the image was never optimised under;
    - ``p_target_<judge>`` and ``p_target_<judge>_heldout_transforms``: each judge of the target
      (``{name: Judge}``) on the image as it is and under the same held-out draws (None for a class the judge lacks),

    so a reader sees whether the image carries the class or only fools the one model.
    """
    from petprobe.heads.training import predict_proba

    ideal, report = {}, {}
    for prefix, target in targets.items():
        model, names, index = target.model, target.names, target.index
        for method, images in ideal_images(model, index, size=size, steps=steps, lr=lr, seed=seed,
                                           tv_weight=tv_weight, l2_weight=l2_weight, color=color, device=device,
                                           desc=f"ideal images{', ImageNet classes,' if prefix else ''}").items():
            p = predict_proba(model, images, batch_size=16)[torch.arange(len(index)), index]
            own = p_target_under_transforms(model, images, index, standard_transforms(), draws=draws, seed=seed + 1)
            heldout = p_target_under_transforms(model, images, index, heldout_transforms(), draws=draws,
                                                seed=seed + 2)
            ideal[prefix + method] = (images, names, p)
            rows = {n: {"p_target_optimised": round(float(v), 6), "p_target_optimisation_transforms": round(float(f), 6),
                        "p_target_heldout_transforms": round(float(h), 6)}
                    for n, v, f, h in zip(names, p, own, heldout)}
            for judge, scorer in target.judges.items():
                other, other_index = scorer.model, scorer.index
                known = [i for i, j in enumerate(other_index) if j is not None]
                q = predict_proba(other, images, batch_size=16)
                # The same held-out draws (same seed) as the optimised model's.
                q_heldout = p_target_under_transforms(other, images[known], [other_index[i] for i in known],
                                                      heldout_transforms(), draws=draws, seed=seed + 2) \
                    if known else []
                heldout_of = dict(zip(known, q_heldout))
                for i, (n, j) in enumerate(zip(names, other_index)):
                    rows[n][f"p_target_{judge}"] = None if j is None else round(float(q[i, j]), 6)
                    rows[n][f"p_target_{judge}_heldout_transforms"] = None if j is None else \
                        round(float(heldout_of[i]), 6)
            report[prefix + method] = rows
    return ideal, report


def ideal_summary(report: dict, keys, kinds=("pixel", "fourier")) -> dict:
    """Mean, min and max of each ``keys`` measure over the ``kinds`` images of ``ideal_images_of``'s
    report (images whose value is None left out), and their number: ``{key: {mean, min, max, n_images}}``."""
    out = {}
    for key in keys:
        values = [row[key] for kind in kinds for row in report.get(kind, {}).values() if row.get(key) is not None]
        if values:
            out[key] = {"mean": round(sum(values) / len(values), 6), "min": min(values), "max": max(values),
                        "n_images": len(values)}
    return out
