"""GPU check: where the embed path's time goes on a CUDA device, and whether a CUDA run gives the CPU run's metrics.

Run through ``bash benchmarks/gpu_check.sh`` on a machine with a CUDA GPU. It prints one table:

- embed throughput (images/s, median of ``--rounds``) on ``--images`` real sample JPEGs, split so
  the bottleneck is visible:
  * ``decode (host)``: petprobe's loader alone (torchvision.io JPEG decode + uint8 resize/crop in
    ``embed.num_workers`` processes, pinned, moved to the GPU, normalised), no model;
  * ``decode (GPU, batched)``: file bytes read on the host, ``torchvision.io.decode_jpeg(list,
    device="cuda")`` in batches, resize/crop/normalise on the GPU, no model;
  * ``model only``: the folded, channels_last backbone on batches already on the GPU, in the
    precision ``embed.precision: auto`` resolves to;
  * ``end to end (host decode)``: ``petprobe.embedding.embed.embed_images``, what the embed stage runs;
  * ``end to end (GPU decode)``: GPU decode feeding the same model, for comparison;
- a ``dvc repro`` of the sample in a temporary copy of the repo on the GPU (``embed.precision:
  auto``), its headline metrics against the committed CPU run's (metrics/*.json, dvc.lock) with
  the tolerance .ci/compare_runs.py uses for runs on other machines.

Without CUDA it stops with one line and exit status 2. ``--allow-cpu`` runs the same
measurements on the CPU (and skips GPU decoding), to check the script itself on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from petprobe.backbones import get_backbone  # noqa: E402
from petprobe.data.images import inspect_image  # noqa: E402
from petprobe.device import resolve_batch_size, resolve_precision  # noqa: E402
from petprobe.embedding.batches import image_batches  # noqa: E402
from petprobe.embedding.embed import embed_images, fold_batchnorm  # noqa: E402
from petprobe.params import load_params  # noqa: E402

SAMPLE = REPO.parent / "shared" / "datasets"


def sample_jpegs(n: int) -> list[str]:
    """The first ``n`` readable JPEG files (by content) of the sample, cats and dogs alternating."""
    per_class = [sorted((SAMPLE / "PetImages" / c).glob("*.jpg"), key=lambda p: p.name) for c in ("Cat", "Dog")]
    chosen = []
    for pair in zip(*per_class):
        for path in pair:
            if len(chosen) < n and path.read_bytes()[:3] == b"\xff\xd8\xff" and inspect_image(path) is None:
                chosen.append(str(path))
        if len(chosen) >= n:
            break
    return chosen


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def rate(fn, n: int, rounds: int, device: torch.device) -> tuple[float, list[float]]:
    speeds = []
    for _ in range(rounds):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        speeds.append(n / (time.perf_counter() - t0))
    return statistics.median(speeds), speeds


def gpu_decoded_batches(paths: list[str], preprocessing, batch_size: int, device: torch.device):
    """Normalised channels_last batches, JPEGs decoded on the GPU in batches (bytes read on the host)."""
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    for i in range(0, len(paths), batch_size):
        data = [read_file(p) for p in paths[i:i + batch_size]]
        images = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        batch = torch.stack([preprocessing.crop_uint8(im) for im in images])
        yield preprocessing.normalize(batch).contiguous(memory_format=torch.channels_last)


def measure(args, device: torch.device) -> list[tuple[str, float, str]]:
    cfg = load_params(REPO / "params.yaml").embed
    backbone = get_backbone(args.backbone)
    precision = resolve_precision(cfg.precision, device)
    batch_size = resolve_batch_size(cfg.batch_size, device)
    paths = sample_jpegs(args.images)
    n = len(paths)
    prep = backbone.preprocessing
    model = fold_batchnorm(backbone.build()).to(device, memory_format=torch.channels_last)
    rows = []

    def host_decode():
        for _ in image_batches(paths, prep, batch_size=batch_size, num_workers=cfg.num_workers, device=device):
            pass

    def end_to_end():
        for _ in embed_images(backbone.build(), prep, paths, batch_size=batch_size, num_workers=cfg.num_workers,
                              device=device, precision=precision, progress=False):
            pass

    on_device = list(image_batches(paths, prep, batch_size=batch_size, num_workers=cfg.num_workers, device=device))

    def model_only():
        with torch.inference_mode(), precision.autocast(device):
            for batch in on_device:
                model(batch).float()

    gpu_decode = device.type == "cuda"

    def gpu_decode_only():
        for _ in gpu_decoded_batches(paths, prep, batch_size, device):
            pass

    def gpu_end_to_end():
        with torch.inference_mode():
            for batch in gpu_decoded_batches(paths, prep, batch_size, device):
                with precision.autocast(device):
                    model(batch).float().cpu()

    detail = f"{n} sample JPEGs, batch {batch_size}, {cfg.num_workers} workers, {precision.name}"
    plan = [("decode (host)", host_decode), ("model only", model_only), ("end to end (host decode)", end_to_end)]
    if gpu_decode:
        plan[1:1] = [("decode (GPU, batched)", gpu_decode_only)]
        plan.append(("end to end (GPU decode)", gpu_end_to_end))
    for name, fn in plan:
        fn()  # warm-up: worker start, cuDNN/oneDNN plans, allocator
        median, speeds = rate(fn, n, args.rounds, device)
        rows.append((f"embed: {name}", median, f"{detail}; rounds " + ", ".join(f"{s:.0f}" for s in speeds)))
    if gpu_decode:
        speed = dict((r[0], r[1]) for r in rows)
        host, gpu = speed["embed: end to end (host decode)"], speed["embed: end to end (GPU decode)"]
        rows.append(("GPU decode wins end to end", gpu / host, "ratio GPU-decode / host-decode end to end"))
    return rows


def load_compare_runs():
    spec = importlib.util.spec_from_file_location("compare_runs", REPO / ".ci" / "compare_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def repro_on_device(args) -> list[tuple[str, object, str]]:
    """`dvc repro` of the sample in a temporary copy of the working tree; compare with the committed run."""
    sys.path.insert(0, str(REPO / "tests"))
    from repo_copy import copy_repo  # the same copy the tests and the scale benchmark run in

    rows = []
    with tempfile.TemporaryDirectory(prefix="petprobe-gpu-") as tmp:
        work = Path(tmp) / "repo"
        copy_repo(work)
        (work / ".dvc" / "config.local").write_text("[core]\n    no_scm = true\n")
        params = (work / "params.yaml").read_text()
        params = params.replace("mirror: ../shared/datasets", f"mirror: {SAMPLE}", 1)
        (work / "params.yaml").write_text(params)
        env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(work),
               "DVC_SITE_CACHE_DIR": str(Path(tmp) / "site-cache")}
        t0 = time.perf_counter()
        log = Path(tmp) / "repro.log"
        with open(log, "w") as fh:
            rc = subprocess.run(["dvc", "repro"], cwd=work, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
        seconds = time.perf_counter() - t0
        if rc != 0:
            print(log.read_text()[-4000:], file=sys.stderr)
            raise SystemExit(f"gpu_check: error: dvc repro of the sample failed on {args.device_name}")
        rows.append(("dvc repro of the sample", seconds, "seconds, clean run, embed.precision auto"))
        rows += compare_with_cpu_run(work)
    return rows


def compare_with_cpu_run(work: Path) -> list[tuple[str, object, str]]:
    """Headline metrics of the run in ``work`` against the committed CPU run, with CI's tolerance."""
    compare = load_compare_runs()
    rows = []
    broken = compare.committed(REPO / "dvc.lock", REPO / "metrics", work / "dvc.lock", work / "metrics")
    for ds in ("pets", "catsdogs"):
            new = json.loads((work / "metrics" / f"{ds}.json").read_text())
            old = json.loads((REPO / "metrics" / f"{ds}.json").read_text())
            for head in ("logreg", "head"):
                for key in ("top1", "balanced_accuracy"):
                    if isinstance(old.get(head), dict) and key in old[head]:
                        rows.append((f"{ds} {head} {key}", float(new[head][key]),
                                     f"CPU (committed) {old[head][key]:.4f}, diff "
                                     f"{new[head][key] - old[head][key]:+.4f}, tolerance ±{compare.ACCURACY_TOLERANCE}"))
    rows.append(("metrics within CI tolerance", "yes" if not broken else "NO",
                 "; ".join(broken) if broken else "compare_runs.py committed: every promise kept"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default=None, help="default: backbone of params.yaml")
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--allow-cpu", action="store_true", help="without CUDA, measure on the CPU (checks the script)")
    ap.add_argument("--no-repro", action="store_true", help="skip the dvc repro and the metrics comparison")
    ap.add_argument("--compare-only", type=Path, metavar="REPO_COPY",
                    help="instead of a new dvc repro, compare the finished run in REPO_COPY with the committed one")
    args = ap.parse_args()
    args.backbone = args.backbone or load_params(REPO / "params.yaml").backbone
    if torch.cuda.is_available():
        device = torch.device("cuda")
        args.device_name = f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    elif args.allow_cpu:
        device = torch.device("cpu")
        args.device_name = f"CPU only, {os.cpu_count()} cores (--allow-cpu: NOT a GPU result)"
    else:
        print(f"gpu_check: error: no CUDA device (torch {torch.__version__}, built with CUDA "
              f"{torch.version.cuda or 'none'}); run it on a machine with a GPU, or --allow-cpu to "
              f"check the script on the CPU", file=sys.stderr)
        sys.exit(2)
    print(f"gpu_check on {args.device_name}; backbone {args.backbone}; torch {torch.__version__}", flush=True)
    rows = measure(args, device)
    if args.compare_only:
        rows += compare_with_cpu_run(args.compare_only.resolve())
    elif not args.no_repro:
        rows += repro_on_device(args)
    width = max(len(r[0]) for r in rows)
    print(f"\n| {'check':<{width}} | value | detail |\n|{'-' * (width + 2)}|------:|---|")
    for name, value, detail in rows:
        shown = (f"{value:.4f}" if value < 10 else f"{value:,.1f}") if isinstance(value, float) else str(value)
        print(f"| {name:<{width}} | {shown} | {detail} |")
    if rows and rows[-1][1] == "NO":
        raise SystemExit(1)


if __name__ == "__main__":
    main()
