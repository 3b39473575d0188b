"""Fine-tuning the backbone's last block from a logistic probe: the finetune comparison's training."""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn

from petprobe.errors import PetprobeError
from petprobe.heads.comparisons import FinetuneNet, train_comparison
from petprobe.heads.logreg import LogRegHead
from petprobe.labels import class_index

__all__ = ["finetune_last_block"]


def finetune_last_block(tail: nn.Module, acts: dict, labels: dict, C: float, *, lr: float, batch_size: int,
                        epochs: int, seed: int, device, desc: str, where: str) -> dict:
    """Fine-tune ``tail`` (the last block and what follows it up to the embedding) and a linear layer
    on the frozen trunk's activations ``acts`` (train, val, test) with ``labels`` (label arrays), by
    ``train_comparison``'s protocol. The linear layer starts from a logistic probe at logreg's ``C``
    fit on the tail's untuned embeddings of the splits the run trains on (train; train+val for the
    refit), and each run starts from a fresh copy of the pretrained tail."""
    tail = tail.to(device)
    with torch.no_grad():
        embeddings = {s: torch.cat([tail(a) for a in acts[s].split(256)]).cpu().numpy() for s in ("train", "val")}

    def probe(fit_splits: tuple[str, ...]) -> LogRegHead:
        return LogRegHead(cs=(C,)).fit(np.concatenate([embeddings[s] for s in fit_splits]),
                                       np.concatenate([labels[s] for s in fit_splits]))

    classes = [str(c) for c in probe(("train",)).classes_]
    if set(classes) != set(np.concatenate(list(labels.values()))):
        raise PetprobeError(f"{where}: every class needs training images")
    targets = {s: torch.as_tensor(class_index(y, classes)).to(device) for s, y in labels.items()}

    def make_net(fit_splits: tuple[str, ...]) -> nn.Module:  # a fresh copy of the pretrained tail per run
        return FinetuneNet(copy.deepcopy(tail), probe(fit_splits).to_module()).to(device)

    return train_comparison(make_net, acts, targets, labels, classes, lr=lr, weight_decay=0.0, batch_size=batch_size,
                            epochs=epochs, seed=seed, desc=desc)
