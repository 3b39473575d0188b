"""Targeted adversarial attacks in [0,1] pixel space, torchattacks-style, and how to measure them.

An attack is a small object: ``__init__`` stores its hyperparameters under their own names,
``attack(images, targets)`` returns adversarial images in [0,1], and ``repr(attack)`` lists the
hyperparameters (it goes into render.json). The model must take [0,1] images and return one
``(N, C)`` logits tensor (``petprobe.probing.classifier.PixelClassifier``); normalisation is inside it.

``assess`` measures a batch of adversarial images: success, target probability, L-inf and L2 size
of the perturbation; success when the 224-px model input is written as an 8-bit PNG and read back
straight into the model (``png_model_input_*``: quantisation only); success when that PNG goes
through exactly what `petprobe predict` does to a file (``png_via_predict_*``: resize, centre crop,
its precision); and transfer to a second model, counted only over the images that model gets right
when clean (``transfer_success_of_clean_correct`` over ``transfer_n_clean_correct`` images), so its
own clean mistakes never count as transferred, and also only over those of them whose white-box
attack succeeded (``transfer_success_of_whitebox_success`` over ``transfer_n_whitebox_success``):
an attack that did not fool the model it was made for has nothing to transfer.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from petprobe.heads.training import predict_proba
from petprobe.progress import progress

__all__ = ["Attack", "PGD", "Unbounded", "Assessment", "assess", "quantize", "png_roundtrip", "attack_suite",
           "run_attacks", "pooled_summary"]


class Attack:
    """Base class: owns the model's mode (eval during the attack, restored after) and ``repr``.

    ``batch_size`` only bounds memory: gradients are summed per image, so the result does not
    depend on it.
    """

    def __init__(self, model: nn.Module, batch_size: int | None = None):
        self.model = model
        self.batch_size = batch_size
        self._on_step: Callable[[int], object] | None = None  # progress: called once per gradient step

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        try:
            return self.forward(images, targets)
        finally:
            self.model.train(was_training)

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _target_loss_grad(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradient of each image's cross-entropy for its target class, and the logits it came with.

        torch.autograd.grad leaves the model's ``.grad`` buffers untouched.
        """
        grads, logits = [], []
        step = self.batch_size or len(images)
        for x, t in zip(images.split(step), targets.split(step)):
            x = x.detach().requires_grad_(True)
            out = self.model(x)
            grads.append(torch.autograd.grad(F.cross_entropy(out, t, reduction="sum"), x)[0])
            logits.append(out.detach())
        if self._on_step is not None:
            self._on_step(1)
        return torch.cat(grads), torch.cat(logits)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={_short(v)}" for k, v in vars(self).items()
                         if not k.startswith("_") and k not in ("model", "batch_size"))
        return f"{type(self).__name__}({args})"


def _short(value):
    return round(value, 6) if isinstance(value, float) else value


class PGD(Attack):
    """Targeted projected gradient descent, L-inf (Madry et al. 2018, "Towards Deep Learning Models
    Resistant to Adversarial Attacks"), on images in [0,1].

    Each step moves every pixel by ``alpha`` against the sign of the gradient of the target class's
    cross-entropy, then projects back onto ``|adv - images| <= eps`` and ``[0, 1]``.

    Arguments:
        model: [0,1] images ``(N, 3, H, W)`` -> logits ``(N, C)``.
        eps: L-inf radius in pixel units (default 8/255).
        alpha: step size in pixel units (default 2/255).
        steps: number of steps (default 10).
        random_start: start from a uniform random point of the eps ball (default True).
        seed: seeds the random start; the same seed gives the same images.

    Shape: images ``(N, 3, H, W)`` in [0,1], targets ``(N,)`` class indices -> ``(N, 3, H, W)`` in [0,1].

    Example::
        attack = PGD(model, eps=4/255, alpha=1/255, steps=10)
        adversarial = attack(images, targets)
    """

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float = 2 / 255, steps: int = 10,
                 random_start: bool = True, seed: int = 0, batch_size: int | None = None):
        super().__init__(model, batch_size)
        self.eps = eps
        self.alpha = alpha
        self.steps = steps
        self.random_start = random_start
        self.seed = seed

    def forward(self, images, targets):
        images = images.detach()
        adv = images.clone()
        if self.random_start:
            generator = torch.Generator(device=images.device).manual_seed(self.seed)
            noise = torch.rand(images.shape, generator=generator, device=images.device, dtype=images.dtype)
            adv = (adv + (2 * noise - 1) * self.eps).clamp(0, 1)
        for _ in range(self.steps):
            grad, _ = self._target_loss_grad(adv, targets)
            adv = adv - self.alpha * grad.sign()  # targeted: lower the target's loss
            adv = (images + (adv - images).clamp(-self.eps, self.eps)).clamp(0, 1).detach()
        return adv


class Unbounded(Attack):
    """The seed's attack: signed-gradient steps toward the target with no eps ball, each image stopping
    as soon as the model predicts the target (so its perturbation is as small as this walk finds).

    Arguments:
        model: [0,1] images -> logits.
        alpha: step size in pixel units (default 1/255).
        steps: most steps per image (default 50); images not fooled by then are returned as they are.

    Example::
        adversarial = Unbounded(model, alpha=1/255, steps=50)(images, targets)
    """

    def __init__(self, model: nn.Module, alpha: float = 1 / 255, steps: int = 50, batch_size: int | None = None):
        super().__init__(model, batch_size)
        self.alpha = alpha
        self.steps = steps

    def forward(self, images, targets):
        adv = images.detach().clone()
        todo = torch.arange(len(adv), device=adv.device)
        for _ in range(self.steps):
            # One pass gives both the check (already fooled?) and the step for the others.
            grad, logits = self._target_loss_grad(adv[todo], targets[todo])
            moving = logits.argmax(1) != targets[todo]
            todo, grad = todo[moving], grad[moving]
            if len(todo) == 0:
                break
            adv[todo] = (adv[todo] - self.alpha * grad.sign()).clamp(0, 1)
        return adv


def quantize(images: torch.Tensor) -> torch.Tensor:
    """[0,1] floats -> uint8 ``(N, H, W, 3)``, rounded to the nearest 8-bit level, as an image file stores them."""
    return (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()


def png_roundtrip(images: torch.Tensor, folder: str | Path | None = None) -> torch.Tensor:
    """Write each image as an 8-bit PNG file, read it back, return the [0,1] tensor that was read.

    ``folder`` keeps the files; by default they go to a temporary folder that is removed.
    """
    with tempfile.TemporaryDirectory(prefix="petprobe-png-") as tmp:
        folder = Path(folder or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        read = []
        for i, pixels in enumerate(quantize(images).numpy()):
            path = folder / f"{i:04d}.png"
            Image.fromarray(pixels, "RGB").save(path)
            with Image.open(path) as im:
                read.append(torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0))
    return torch.stack(read).permute(0, 3, 1, 2).contiguous().to(images.device)


@dataclass
class Assessment:
    """Per-image measurements of one attack on one batch (all tensors ``(N,)``)."""

    success: torch.Tensor  # the model predicts the target
    p_target: torch.Tensor
    linf: torch.Tensor  # perturbation size in [0,1] pixel units
    l2: torch.Tensor
    png_model_input_success: torch.Tensor  # the model input saved as an 8-bit PNG, read back, fed to the model
    png_model_input_p_target: torch.Tensor
    png_via_predict_success: torch.Tensor | None = None  # that PNG through `petprobe predict`'s preprocessing
    png_via_predict_p_target: torch.Tensor | None = None
    transfer_success: torch.Tensor | None = None  # the second model predicts the target
    transfer_clean_correct: torch.Tensor | None = None  # the second model is right on the clean image

    def summary(self) -> dict:
        mean = lambda t: round(float(t.float().mean()), 6) if len(t) else None  # noqa: E731
        out = {"success": mean(self.success), "p_target": mean(self.p_target), "linf": mean(self.linf),
               "l2": mean(self.l2), "png_model_input_success": mean(self.png_model_input_success),
               "png_model_input_p_target": mean(self.png_model_input_p_target)}
        if self.png_via_predict_success is not None:
            out["png_via_predict_success"] = mean(self.png_via_predict_success)
            out["png_via_predict_p_target"] = mean(self.png_via_predict_p_target)
        if self.transfer_success is not None:
            out.update(_transfer_summary([self]))
        return out


def _transfer_summary(assessments: list[Assessment]) -> dict:
    """Transfer success over the images the transfer model classifies right when clean, and over
    those of them the white-box attack turned into the target; with their counts."""
    hit = torch.cat([a.transfer_success for a in assessments])
    kept = torch.cat([a.transfer_clean_correct for a in assessments])
    fooled = kept & torch.cat([a.success for a in assessments])

    def rate(mask):
        return round(float(hit[mask].float().mean()), 6) if mask.any() else None

    return {"transfer_success_of_clean_correct": rate(kept), "transfer_n_clean_correct": int(kept.sum()),
            "transfer_success_of_whitebox_success": rate(fooled), "transfer_n_whitebox_success": int(fooled.sum())}


@torch.no_grad()
def assess(model: nn.Module, images: torch.Tensor, adversarial: torch.Tensor, targets: torch.Tensor, *,
           transfer: nn.Module | None = None, transfer_targets: torch.Tensor | None = None,
           transfer_sources: torch.Tensor | None = None,
           predict_files: Callable[[list[str]], torch.Tensor] | None = None, batch_size: int = 16) -> Assessment:
    """Measure ``adversarial`` (made from ``images`` for ``targets``) under ``model`` and, if given, ``transfer``.

    The PNG checks use real PNG files: re-read into the model as they are, and, with
    ``predict_files`` (paths -> probabilities, columns in the model's class order; the render stage
    passes ``petprobe.predict.Predictor.predict_proba``), classified the way `petprobe predict`
    classifies a file. Transfer needs ``transfer_sources`` (the clean images' classes in the
    transfer model's order) to know which clean images it gets right.
    """
    def probs(m, x):
        return predict_proba(m, x, batch_size=batch_size)

    targets = targets.cpu()
    delta = (adversarial - images).flatten(1).cpu()
    p = probs(model, adversarial)
    rows = torch.arange(len(targets))
    with tempfile.TemporaryDirectory(prefix="petprobe-png-") as folder:
        p_png = probs(model, png_roundtrip(adversarial, folder))
        p_predict = None
        if predict_files is not None:
            p_predict = predict_files([str(Path(folder) / f"{i:04d}.png") for i in range(len(adversarial))])
    result = Assessment(success=p.argmax(1) == targets, p_target=p[rows, targets], linf=delta.abs().amax(1),
                        l2=delta.norm(dim=1), png_model_input_success=p_png.argmax(1) == targets,
                        png_model_input_p_target=p_png[rows, targets])
    if p_predict is not None:
        result.png_via_predict_success = p_predict.argmax(1) == targets
        result.png_via_predict_p_target = p_predict[rows, targets].float()
    if transfer is not None:
        result.transfer_success = probs(transfer, adversarial).argmax(1) == transfer_targets.cpu()
        result.transfer_clean_correct = probs(transfer, images).argmax(1) == transfer_sources.cpu()
    return result


def attack_suite(model: nn.Module, *, eps, pgd_steps: int, pgd_alpha: float, random_start: bool, seed: int,
                 unbounded_alpha: float, unbounded_steps: int, batch_size: int | None = None) -> dict[str, Attack]:
    """``{"pgd_<eps*255>": PGD, ..., "unbounded": Unbounded}``; each PGD steps ``pgd_alpha * eps``."""
    attacks: dict[str, Attack] = {
        f"pgd_{e * 255:g}": PGD(model, eps=e, alpha=pgd_alpha * e, steps=pgd_steps, random_start=random_start,
                                seed=seed, batch_size=batch_size)
        for e in eps
    }
    attacks["unbounded"] = Unbounded(model, alpha=unbounded_alpha, steps=unbounded_steps, batch_size=batch_size)
    return attacks


def run_attacks(attacks: dict[str, Attack], images: torch.Tensor, targets: torch.Tensor, *,
                transfer: nn.Module | None = None, transfer_targets: torch.Tensor | None = None,
                transfer_sources: torch.Tensor | None = None,
                predict_files: Callable[[list[str]], torch.Tensor] | None = None,
                batch_size: int = 16, desc: str = "attacks") -> tuple[dict[str, torch.Tensor], dict[str, Assessment]]:
    """Run every attack on ``images`` (on the model's device) and assess it; tensors come back on the CPU."""
    adversarial, assessments = {}, {}
    # Counted in gradient steps, so the bar moves inside each PGD run; an Unbounded attack that
    # fools every image early is credited its unused steps.
    with progress(total=sum(attack.steps for attack in attacks.values()), desc=desc, unit="step",
                  leave=False) as bar:
        for name, attack in attacks.items():
            device = next(attack.model.parameters()).device
            start, attack._on_step = bar.n, bar.update
            try:
                adversarial[name] = attack(images.to(device), targets.to(device)).cpu()
            finally:
                attack._on_step = None
            bar.update(attack.steps - (bar.n - start))
            assessments[name] = assess(attack.model, images, adversarial[name], targets, transfer=transfer,
                                       transfer_targets=transfer_targets, transfer_sources=transfer_sources,
                                       predict_files=predict_files, batch_size=batch_size)
    return adversarial, assessments


def pooled_summary(assessments: list[Assessment]) -> dict:
    """Rates over the images of several assessments together (e.g. every pair at one eps)."""
    fields = ["success", "p_target", "png_model_input_success"]
    if all(a.png_via_predict_success is not None for a in assessments):
        fields.append("png_via_predict_success")
    out = {"n_images": sum(len(a.success) for a in assessments)}
    for name in fields:
        out[name] = round(float(torch.cat([getattr(a, name) for a in assessments]).float().mean()), 6)
    with_transfer = [a for a in assessments if a.transfer_success is not None]
    if with_transfer:
        out.update(_transfer_summary(with_transfer))
    return out
