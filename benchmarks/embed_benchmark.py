"""Paired benchmark: petprobe's embed path against a naive, seed-style embedding loop.

Both run in this one process, on the same images, the same backbone and weights, alternating
(baseline, petprobe, baseline, petprobe, ...) so that a machine shared with other work slows
both alike. Printed per device: images/s of each (median over rounds), their ratio, and the peak
resident memory of each (PSS of this process plus its DataLoader workers, sampled every 20 ms).

- naive: torchvision ``ImageFolder`` (PIL decode, PIL resize), float32 NCHW, ``num_workers=0``,
  batch 32, ``torch.no_grad``, the model in its default memory format;
- petprobe: ``petprobe.embedding.embed.embed_images`` with the embed params of params.yaml (by default
  torchvision.io JPEG decode, uint8 resize, 2 workers, channels_last, precision auto).

    python benchmarks/embed_benchmark.py --backbone mobilenet_v2 --images 256
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms as T

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from petprobe.backbones import get_backbone  # noqa: E402
from petprobe.data.images import inspect_image  # noqa: E402
from petprobe.device import resolve_batch_size, resolve_precision  # noqa: E402
from petprobe.embedding.embed import embed_images  # noqa: E402
from petprobe.params import load_params  # noqa: E402
from pss import PssSampler  # noqa: E402  (this process and its DataLoader workers)


def image_folder(source: Path, n: int, dest: Path) -> list[str]:
    """Symlink the first n readable images of each class folder of ``source`` (alternating
    classes) into an ImageFolder layout; return their paths in ImageFolder's order."""
    classes = sorted(p for p in source.iterdir() if p.is_dir())
    per_class = [sorted(c.iterdir(), key=lambda p: p.name) for c in classes]
    chosen, i = {c.name: [] for c in classes}, 0
    while sum(map(len, chosen.values())) < n and i < max(map(len, per_class)):
        for c, files in zip(classes, per_class):
            if i < len(files) and sum(map(len, chosen.values())) < n and inspect_image(files[i]) is None:
                chosen[c.name].append(files[i])
        i += 1
    for name, files in chosen.items():
        (dest / name).mkdir(parents=True)
        for f in files:
            (dest / name / f.name).symlink_to(f)
    return [s for s, _ in datasets.ImageFolder(dest).samples]


def naive(model, folder: Path, preprocessing, device) -> int:
    tf = T.Compose([T.Resize(preprocessing.resize, interpolation=T.InterpolationMode(preprocessing.interpolation)),
                    T.CenterCrop(preprocessing.crop), T.ToTensor(), T.Normalize(preprocessing.mean, preprocessing.std)])
    loader = DataLoader(datasets.ImageFolder(folder, transform=tf), batch_size=32, num_workers=0)
    model = model.to(device, memory_format=torch.contiguous_format)
    n = 0
    with torch.no_grad():
        for x, _ in loader:
            rows = model(x.to(device)).cpu().numpy()
            n += len(rows)
    return n


def fast(model, paths, preprocessing, device, cfg) -> int:
    precision = resolve_precision(cfg.precision, device)
    n = 0
    for rows in embed_images(model, preprocessing, paths, batch_size=resolve_batch_size(cfg.batch_size, device),
                             num_workers=cfg.num_workers, device=device, precision=precision, progress=False):
        n += len(rows)
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--images", type=int, default=256, help="number of images (default 256)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per method (default 3)")
    parser.add_argument("--source", type=Path, default=REPO.parent / "shared/datasets/PetImages",
                        help="a folder of <class>/<image> (default ../shared/datasets/PetImages)")
    parser.add_argument("--num-workers", type=int, help="override embed.num_workers of params.yaml")
    parser.add_argument("--precision", help="override embed.precision of params.yaml")
    args = parser.parse_args()

    cfg = load_params(REPO / "params.yaml").embed
    overrides = {"num_workers": args.num_workers, "precision": args.precision}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    backbone = get_backbone(args.backbone)
    model = backbone.build()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    with tempfile.TemporaryDirectory() as tmp:
        paths = image_folder(args.source, args.images, Path(tmp))
        print(f"{args.backbone}: {len(paths)} images from {args.source}; torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs; petprobe: batch_size={cfg.batch_size} "
              f"num_workers={cfg.num_workers} precision={cfg.precision}")
        for device in devices:
            fast(model, paths[:64], backbone.preprocessing, device, cfg)  # warm-up: allocator, oneDNN/cuDNN plans
            naive(model, Path(tmp), backbone.preprocessing, device)
            speed, peak = {"naive": [], "petprobe": []}, {"naive": 0, "petprobe": 0}
            for _ in range(args.rounds):
                for method in ("naive", "petprobe"):
                    with PssSampler(interval=0.02) as rss:
                        started = time.perf_counter()
                        if method == "naive":
                            n = naive(model, Path(tmp), backbone.preprocessing, device)
                        else:
                            n = fast(model, paths, backbone.preprocessing, device, cfg)
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                        speed[method].append(n / (time.perf_counter() - started))
                    peak[method] = max(peak[method], rss.peak_total)
            name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
            precision = resolve_precision(cfg.precision, device).name
            for method in ("naive", "petprobe"):
                rounds = ", ".join(f"{s:.1f}" for s in speed[method])
                print(f"  {name:>10} {method:>8}: {statistics.median(speed[method]):7.1f} img/s (rounds: {rounds}), "
                      f"peak RSS (PSS) {peak[method] / 2**20:.0f} MiB, "
                      + (precision if method == "petprobe" else "fp32"))
            ratio = statistics.median(speed["petprobe"]) / statistics.median(speed["naive"])
            print(f"  {name:>10}    ratio: {ratio:.2f}x")


if __name__ == "__main__":
    main()
