"""Reference points for the frozen-backbone heads: fine-tuning the last block, and training from scratch.

``Backbone.split_last_block`` cuts a registry backbone into a frozen trunk and its last block
(plus what follows it). ``FinetuneNet`` trains that tail and a linear layer on top while the
tail's BatchNorm statistics stay frozen; because the trunk is frozen and there is no augmentation,
its activations are computed once (``trunk_activations``) and every epoch runs on the tail only.
``SmallCNN`` is a four-stage CNN trained from random init on small uint8 images.
``train_comparison`` is the protocol both share, the heads' one: seeded, the epoch count chosen by
validation loss on a run trained on train, then a refit on train+val for that many epochs, scored
on the test split the same way.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from petprobe.embedding.batches import image_batches
from petprobe.heads.metrics import summary
from petprobe.heads.training import evaluate_classifier, fit_classifier, predict_proba, seeded
from petprobe.progress import progress

__all__ = ["FinetuneNet", "trunk_activations", "SmallCNN", "random_flip", "train_comparison"]


class FinetuneNet(nn.Module):
    """Trunk activations -> logits: the unfrozen tail, then a linear classifier.

    BatchNorm layers keep their pretrained running statistics in training mode too: a few
    hundred images and small batches would only make them noisier.
    """

    def __init__(self, tail: nn.Module, classifier: nn.Linear):
        super().__init__()
        self.tail, self.classifier = tail, classifier
        self.requires_grad_(True)

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self.tail.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self

    def forward(self, x):
        return self.classifier(self.tail(x))


def trunk_activations(trunk: nn.Module, paths: list[str], preprocessing, *, batch_size: int, num_workers: int,
                      precision, device: torch.device, desc: str) -> torch.Tensor:
    """The trunk's output for every image, in order, as one float32 tensor on ``device`` (no grad).

    Images come through the embed stage's loader (``embedding.batches.image_batches``, channels_last)."""
    trunk = trunk.to(device, memory_format=torch.channels_last).eval()  # as in embed: 1.5-2x on CPU
    chunks = []
    batches = image_batches(paths, preprocessing, batch_size=batch_size, num_workers=num_workers, device=device)
    with torch.inference_mode():
        for batch in progress(batches, desc=desc, unit="batch", leave=False, total=-(-len(paths) // batch_size)):
            with precision.autocast(device):
                chunks.append(trunk(batch).float())
    # contiguous: back to the default layout; clone: a normal tensor, usable outside inference mode.
    return torch.cat(chunks).contiguous().clone()


class SmallCNN(nn.Module):
    """uint8 images (N, 3, S, S) -> logits: four conv-BN-ReLU-maxpool stages, global pooling, dropout, linear."""

    def __init__(self, n_classes: int, *, width: int = 16, dropout: float = 0.3):
        super().__init__()
        self.register_buffer("mean", torch.full((1, 3, 1, 1), 0.5))
        self.register_buffer("std", torch.full((1, 3, 1, 1), 0.25))
        layers, c_in = [], 3
        for c_out in (width, width * 2, width * 4, width * 8):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(c_in, n_classes))

    def forward(self, x):
        x = (x.float() / 255.0 - self.mean) / self.std
        return self.classifier(self.features(x).mean((2, 3)))


def random_flip(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the batch left-right (the only augmentation; pets are symmetric)."""
    flip = (torch.rand(len(batch), generator=generator) < 0.5).to(batch.device)
    return torch.where(flip[:, None, None, None], batch.flip(-1), batch)


def train_comparison(make_net: Callable[[tuple[str, ...]], nn.Module], inputs: dict, targets: dict, labels: dict,
                     classes, *, lr: float, weight_decay: float, batch_size: int, epochs: int, seed: int,
                     augment: Callable | None = None, desc: str) -> dict:
    """The heads' data protocol: choose the epoch count on val, then train on train+val and test.

    ``make_net(splits)`` builds a fresh net whose initialisation may use the named splits (the
    fine-tuning probe is fit on them): ``("train",)`` for the early-stopping run, which keeps the
    epoch of lowest val loss, then ``("train", "val")`` for the refit of that many epochs (cosine
    schedule over its own length), the model whose test numbers are reported, as TorchHead and
    LogRegHead refit on train+val. ``inputs``/``targets``/``labels`` map train, val and test to
    tensors, class-index tensors and label arrays. Initialisation, dropout, shuffling and
    ``augment`` all draw from ``seed``. Returns best_epoch, epochs_run, val_before (the untrained
    net on val), val (the early-stopping run's best epoch, trained on train only) and test (the
    train+val refit, ``heads.metrics.summary``).
    """
    with seeded(seed):
        net = make_net(("train",))
        val_before = evaluate_classifier(net, inputs["val"], targets["val"])
        history = fit_classifier(net, inputs["train"], targets["train"], inputs["val"], targets["val"], lr=lr,
                                 weight_decay=weight_decay, batch_size=batch_size, max_epochs=epochs,
                                 patience=epochs, generator=torch.Generator().manual_seed(seed), augment=augment,
                                 desc=desc)
    best = min(history, key=lambda r: r["val_loss"])
    with seeded(seed):
        net = make_net(("train", "val"))
        fit_classifier(net, torch.cat([inputs["train"], inputs["val"]]), torch.cat([targets["train"], targets["val"]]),
                       lr=lr, weight_decay=weight_decay, batch_size=batch_size, max_epochs=epochs, patience=epochs,
                       stop_epoch=best["epoch"], generator=torch.Generator().manual_seed(seed), augment=augment,
                       desc=desc and f"{desc} (refit on train+val)")
    proba = predict_proba(net, inputs["test"], batch_size=256, dtype=torch.float64).numpy()
    return {"best_epoch": best["epoch"], "epochs_run": len(history),
            "val_before": {"loss": round(val_before[0], 6), "top1": round(val_before[1], 6)},
            "val": {"loss": round(best["val_loss"], 6), "top1": round(best["val_accuracy"], 6)},
            "test_model": f"refit on train+val for {best['epoch']} epochs",
            "test": summary(proba, labels["test"], classes)}
