"""One supervised training loop for every torch classifier petprobe trains.

``fit_classifier`` trains a module on in-memory tensors with AdamW, a cosine learning-rate
schedule, shuffled mini-batches drawn from a seeded ``torch.Generator`` and early stopping on the
validation loss; the weights of the best epoch are put back at the end. ``seeded`` makes weight
initialisation and dropout repeatable without touching the caller's global RNG state.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from petprobe.progress import progress

__all__ = ["seeded", "fit_classifier", "evaluate_classifier", "predict_proba"]


@contextlib.contextmanager
def seeded(seed: int, *, num_threads: int | None = None):
    """Seed torch's global RNG (init, dropout) inside the block and restore it afterwards.

    ``num_threads`` pins the CPU thread count for the block: float sums are split across threads,
    so the same seed gives bit-identical weights only at the same thread count.
    """
    previous_threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if num_threads:
            torch.set_num_threads(num_threads)
        try:
            yield
        finally:
            torch.set_num_threads(previous_threads)


def _batches(n: int, batch_size: int, generator: torch.Generator | None):
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def evaluate_classifier(module: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *,
                        batch_size: int = 256) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``module`` (in eval mode) on ``inputs``."""
    was_training = module.training
    module.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for index in _batches(len(inputs), batch_size, None):
            logits = module(inputs[index])
            loss += float(F.cross_entropy(logits, targets[index], reduction="sum"))
            correct += int((logits.argmax(1) == targets[index]).sum())
    module.train(was_training)
    return loss / max(len(inputs), 1), correct / max(len(inputs), 1)


@torch.no_grad()
def predict_proba(module: torch.nn.Module, inputs: torch.Tensor, *, batch_size: int,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Softmax probabilities ``(N, C)`` of ``module`` (put in eval mode), on the CPU.

    Inputs go to the module's device one batch at a time; the logits are cast to ``dtype`` before
    the softmax (float64 for metrics, float32 for attacks and rendering).
    """
    module.eval()
    device = next(module.parameters()).device
    return torch.cat([module(chunk.to(device)).to(dtype).softmax(1).cpu() for chunk in inputs.split(batch_size)])


def fit_classifier(module: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                   val_inputs: torch.Tensor | None = None, val_targets: torch.Tensor | None = None, *,
                   lr: float, weight_decay: float, batch_size: int, max_epochs: int, patience: int,
                   generator: torch.Generator, augment: Callable | None = None, stop_epoch: int | None = None,
                   desc: str | None = None) -> list[dict]:
    """Train ``module`` (logits out) in place; return one record per epoch.

    Each record holds ``epoch``, ``lr``, ``train_loss`` and ``train_accuracy`` (running means
    over the epoch's mini-batches, with dropout and ``augment`` active) and, with a validation
    set, ``val_loss`` and ``val_accuracy`` (eval mode). Training stops after ``patience`` epochs
    without a lower validation loss, and the best epoch's weights are loaded back. Without a
    validation set it runs ``max_epochs`` (or ``stop_epoch``, with the cosine schedule spanning those
    ``stop_epoch`` epochs) and keeps the last weights.

    ``augment(batch, generator)`` may transform each training batch, drawing randomness only
    from ``generator``.
    """
    trainable = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay)
    # Cosine decay over the epoch budget; early stopping may end the run before the floor. A run
    # of fixed length (stop_epoch, the refit after early stopping) decays over its own length, so
    # it ends at the floor instead of at an almost undecayed rate.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=min(stop_epoch or max_epochs, max_epochs))
    has_val = val_inputs is not None and len(val_inputs) > 0
    history, best_loss, best_state, stale = [], math.inf, None, 0
    bar = progress(range(1, min(max_epochs, stop_epoch or max_epochs) + 1), desc=desc, unit="epoch", disable=desc is None, leave=False)
    for epoch in bar:
        module.train()
        seen, loss_sum, correct = 0, 0.0, 0
        for index in _batches(len(inputs), batch_size, generator):
            batch, batch_targets = inputs[index], targets[index]
            if augment is not None:
                batch = augment(batch, generator)
            logits = module(batch)
            loss = F.cross_entropy(logits, batch_targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(index)
            loss_sum += float(loss.detach()) * len(index)
            correct += int((logits.detach().argmax(1) == batch_targets).sum())
        record = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"],
                  "train_loss": loss_sum / seen, "train_accuracy": correct / seen}
        schedule.step()
        if has_val:
            record["val_loss"], record["val_accuracy"] = evaluate_classifier(module, val_inputs, val_targets)
            bar.set_postfix(val_loss=f"{record['val_loss']:.4f}", val_acc=f"{record['val_accuracy']:.3f}")
        history.append(record)
        if not has_val:
            continue
        if record["val_loss"] < best_loss:
            best_loss, stale = record["val_loss"], 0
            best_state = copy.deepcopy(module.state_dict())
        else:
            stale += 1
            if stale >= patience:
                break
    bar.close()
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return history
