"""Reference points for the frozen-backbone heads: fine-tuning the last block, and training from scratch.

``split_last_block`` cuts a registry backbone into a frozen trunk and its last block (plus the
final 1x1 conv and pooling). ``FinetuneNet`` trains that tail and a linear layer on top while the
tail's BatchNorm statistics stay frozen; because the trunk is frozen and there is no augmentation,
its activations are computed once (``trunk_activations``) and every epoch runs on the tail only.
``SmallCNN`` is a four-stage CNN trained from random init on small images (``load_images``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.transforms import v2
from tqdm import tqdm

from stages.backbones import EfficientNetLite0, PooledFeatures
from stages.embeddings import image_batches
from stages.errors import PetprobeError
from stages.images import load_rgb

__all__ = ["split_last_block", "FinetuneNet", "trunk_activations", "SmallCNN", "load_images", "random_flip",
           "class_targets"]


class _LiteTrunk(nn.Module):
    def __init__(self, net: EfficientNetLite0, n_blocks: int):
        super().__init__()
        self.stem, self.bn, self.blocks = net._conv_stem, net._bn0, net._blocks[:n_blocks]

    def forward(self, x):
        x = F.relu6(self.bn(self.stem(x)))
        for block in self.blocks:
            x = block(x)
        return x


class _LiteTail(nn.Module):
    def __init__(self, net: EfficientNetLite0, n_blocks: int):
        super().__init__()
        self.blocks, self.conv_head, self.bn = net._blocks[n_blocks:], net._conv_head, net._bn1

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return F.relu6(self.bn(self.conv_head(x))).mean((2, 3))


def split_last_block(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(trunk, tail) with ``tail(trunk(x)) == model(x)``; the tail is the last block + final conv + pooling."""
    if isinstance(model, EfficientNetLite0):
        n = len(model._blocks) - 1
        return _LiteTrunk(model, n), _LiteTail(model, n)
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential) and len(features) > 2:  # mobilenet_v2: ... block 17, final 1x1 conv
        return features[:-2], PooledFeatures(features[-2:])
    raise PetprobeError(f"fine-tuning does not know where the last block of {type(model).__name__} is; "
                        "use efficientnet_lite0 or mobilenet_v2")


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

    Images come through the embed stage's loader (``embeddings.image_batches``, channels_last)."""
    trunk = trunk.to(device, memory_format=torch.channels_last).eval()  # as in embed: 1.5-2x on CPU
    chunks = []
    batches = image_batches(paths, preprocessing, batch_size=batch_size, num_workers=num_workers, device=device)
    with torch.inference_mode():
        for batch in tqdm(batches, desc=desc, unit="batch", leave=False, total=-(-len(paths) // batch_size)):
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


def load_images(paths, size: int, desc: str) -> torch.Tensor:
    """Every image resized (shorter side) and centre-cropped to ``size``, as a uint8 tensor (N, 3, size, size)."""
    resize = v2.Compose([v2.PILToTensor(), v2.Resize(size, antialias=True), v2.CenterCrop(size)])
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    for i, path in enumerate(tqdm(paths, desc=desc, unit="img", leave=False)):
        out[i] = resize(load_rgb(path))
    return out


def random_flip(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the batch left-right (the only augmentation; pets are symmetric)."""
    flip = (torch.rand(len(batch), generator=generator) < 0.5).to(batch.device)
    return torch.where(flip[:, None, None, None], batch.flip(-1), batch)


def class_targets(labels, classes) -> torch.Tensor:
    """Class indices of ``labels`` in ``classes`` order."""
    index = {c: i for i, c in enumerate(classes)}
    return torch.as_tensor(np.array([index[v] for v in labels], dtype=np.int64))
