"""Full-size scale benchmark: the pipeline on full-size mirrors built from the sample, through `dvc repro`.

Not a test (it takes tens of minutes on 2 cores). It

1. builds, outside the repo (``--workdir``, default /tmp/petprobe-scale), full-size mirrors from
   the sample by deterministic variants of its images (crop, flip, scale, JPEG quality; every file's
   bytes differ from every other's):
   - ``PetImages/{Cat,Dog}`` with 12,500 files each. Every sample file is kept once as it is (so the
     real archive's kinds of broken files are there); the rest are variants named
     ``<source stem>_<k>.jpg``, which the catsdogs split keeps in their source's split
     (``petprobe.data.datasets.catsdogs_group``), as a real near-duplicate would have to be;
   - ``oxford-iiit-pet`` with every image named in ../shared/datasets/oxford-iiit-pet/annotations/full/
     (official names and lists: 37 breeds, 3,680 trainval / 3,669 test), each a variant of a sample
     image of the same breed (the sample's own files keep their bytes), plus the sample's unlisted
     quirk files (GIF, .mat);
2. for each size (fractions of the full mirrors, hard links, smallest first), copies the repo's
   working tree into a temporary folder, points ``data.mirror`` at the mirror and runs ``dvc repro``,
   sampling every process of the run (PSS, as benchmarks/embed_benchmark.py does);
3. prints per stage and size: wall time, images/s, peak memory, disk used by the stage's outs, the
   head's epochs and time per epoch, and the growth exponents between the smallest and the largest
   size: time ~ n^a (target a <= 1.1), memory ratio (target < 1.5x), and render flat.

    python benchmarks/scale.py                      # sizes 1/8, 1/2, 1 (full)
    python benchmarks/scale.py --fractions 0.125 1  # fewer sizes

Results are also written to <workdir>/results.json after each size, so a long run that is
stopped keeps what it measured. Timings depend on the machine's load: say what else ran.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from pss import PssSampler  # noqa: E402
from repo_copy import copy_repo  # noqa: E402  (the copy the tests run in)

SAMPLE = REPO.parent / "shared" / "datasets"
FULL_PER_CLASS = 12_500  # PetImages/Cat and PetImages/Dog in the official archive


# ----------------------------------------------------------------------------------------------
# 1. Mirrors


def _variant_bytes(img: Image.Image, seed: tuple[int, ...]) -> bytes:
    """One deterministic variant of ``img``: crop (80-100 % of each side), maybe a mirror flip,
    a rescale (60-100 %) and a JPEG quality (60-95)."""
    rng = np.random.default_rng(list(seed))
    w, h = img.size
    cw, ch = max(8, int(w * rng.uniform(0.8, 1.0))), max(8, int(h * rng.uniform(0.8, 1.0)))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    out = img.crop((x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    scale = rng.uniform(0.6, 1.0)
    out = out.resize((max(8, round(cw * scale)), max(8, round(ch * scale))), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    out.save(buf, format="JPEG", quality=int(rng.integers(60, 96)))
    return buf.getvalue()


def _write_variants(job: tuple[str, list[tuple[str, tuple[int, ...]]]]) -> list[tuple[str, str]]:
    """Decode one source once, write each (destination, seed) variant; return (dest, sha256)."""
    source, targets = job
    with Image.open(source) as im:
        img = im.convert("RGB")
    done = []
    for dest, seed in targets:
        data = _variant_bytes(img, seed)
        Path(dest).write_bytes(data)
        done.append((dest, hashlib.sha256(data).hexdigest()))
    return done


def _decodable(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            im.convert("RGB").load()
        return True
    except Exception:  # any failure: the file stays a verbatim (broken) copy only
        return False


def build_mirrors(full: Path, workers: int) -> None:
    """Build <full>/PetImages and <full>/oxford-iiit-pet once (skipped when complete)."""
    marker = full / "COMPLETE.json"
    if marker.exists():
        print(f"mirrors: reusing {full}", file=sys.stderr)
        return
    if full.exists():
        shutil.rmtree(full)
    t0 = time.perf_counter()
    jobs: list[tuple[str, list]] = []
    verbatim: list[tuple[Path, Path]] = []

    # PetImages: each class folder holds every sample file once, then variants up to 12,500.
    for cls_index, cls in enumerate(("Cat", "Dog")):
        src_dir, dst_dir = SAMPLE / "PetImages" / cls, full / "PetImages" / cls
        dst_dir.mkdir(parents=True)
        files = sorted((p for p in src_dir.iterdir() if p.is_file()), key=lambda p: p.name)
        verbatim += [(p, dst_dir / p.name) for p in files]
        sources = [p for p in files if p.suffix.lower() == ".jpg" and _decodable(p)]
        need = FULL_PER_CLASS - len(files)
        per_source: dict[Path, list] = defaultdict(list)
        for i in range(need):  # round robin: variant k of every source before variant k+1 of any
            src, k = sources[i % len(sources)], 1 + i // len(sources)
            per_source[src].append((str(dst_dir / f"{src.stem}_{k}.jpg"), (1, cls_index, int(src.stem), k)))
        jobs += [(str(s), t) for s, t in per_source.items()]

    # Oxford-IIIT Pet: every officially listed name, a variant of a same-breed sample image.
    pets_src, pets = SAMPLE / "oxford-iiit-pet", full / "oxford-iiit-pet"
    (pets / "images").mkdir(parents=True)
    (pets / "annotations").mkdir(parents=True)
    for name in ("list.txt", "trainval.txt", "test.txt"):
        shutil.copyfile(pets_src / "annotations" / "full" / name, pets / "annotations" / name)
    listed = _listed_stems(pets / "annotations")
    sample_images = sorted(p for p in (pets_src / "images").iterdir() if p.is_file())
    by_breed: dict[str, list[Path]] = defaultdict(list)
    for p in sample_images:
        if p.suffix == ".jpg" and p.stem in listed and _decodable(p):
            by_breed[p.stem.rsplit("_", 1)[0]].append(p)
    for p in sample_images:  # the sample's own files (and its unlisted quirks) keep their bytes
        verbatim.append((p, pets / "images" / p.name))
    have = {p.stem for p in sample_images if p.suffix == ".jpg"}
    per_source = defaultdict(list)
    counters: dict[str, int] = defaultdict(int)
    for stem in sorted(listed):
        if stem in have:
            continue
        breed = stem.rsplit("_", 1)[0]
        srcs = by_breed[breed]
        src = srcs[counters[breed] % len(srcs)]
        counters[breed] += 1
        per_source[src].append((str(pets / "images" / f"{stem}.jpg"), (2, int(stem.rsplit("_", 1)[1]), len(breed))))
    jobs += [(str(s), t) for s, t in per_source.items()]

    for src, dst in verbatim:
        shutil.copyfile(src, dst)
    hashes = {hashlib.sha256(dst.read_bytes()).hexdigest(): str(dst) for _, dst in verbatim}
    n_variants = sum(len(t) for _, t in jobs)
    print(f"mirrors: writing {n_variants} variants with {workers} processes ...", file=sys.stderr)
    with ProcessPoolExecutor(workers) as pool:
        for done in pool.map(_write_variants, jobs, chunksize=4):
            for dest, digest in done:
                if digest in hashes:  # never seen in practice; the promise is checked, not assumed
                    raise SystemExit(f"scale.py: {dest} is byte-identical to {hashes[digest]}")
                hashes[digest] = dest
    seconds = time.perf_counter() - t0
    counts = {"Cat": len(list((full / "PetImages/Cat").iterdir())), "Dog": len(list((full / "PetImages/Dog").iterdir())),
              "pets_images": len(list((pets / "images").iterdir()))}
    marker.write_text(json.dumps({"counts": counts, "distinct_files": len(hashes), "seconds": round(seconds, 1)}))
    print(f"mirrors: {counts}, {len(hashes)} distinct files, {seconds:.0f} s", file=sys.stderr)


def _listed_stems(annotations: Path) -> set[str]:
    stems = set()
    for name in ("trainval.txt", "test.txt"):
        for line in (annotations / name).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                stems.add(line.split()[0])
    return stems


def fraction_mirror(full: Path, fraction: float, dest: Path) -> dict[str, int]:
    """Hard-link a fraction of the full mirrors into ``dest``: the first n of each PetImages class in
    generation order (sample files, then variant 1 of each, ...), every k-th line of the pets lists."""
    if fraction >= 1.0:
        return {"catsdogs": 2 * FULL_PER_CLASS, "pets": len(_listed_stems(full / "oxford-iiit-pet/annotations"))}
    if dest.exists():
        shutil.rmtree(dest)
    n_cd = 0
    for cls in ("Cat", "Dog"):
        src_dir, dst_dir = full / "PetImages" / cls, dest / "PetImages" / cls
        dst_dir.mkdir(parents=True)
        files = sorted(src_dir.iterdir(), key=_generation_order)
        for p in files[: round(FULL_PER_CLASS * fraction)]:
            os.link(p, dst_dir / p.name)
            n_cd += 1
    step = round(1 / fraction)
    src, dst = full / "oxford-iiit-pet", dest / "oxford-iiit-pet"
    (dst / "annotations").mkdir(parents=True)
    (dst / "images").mkdir()
    kept: set[str] = set()
    for name in ("list.txt", "trainval.txt", "test.txt"):
        lines = (src / "annotations" / name).read_text().splitlines()
        header = [ln for ln in lines if ln.startswith("#")]
        body = [ln for ln in lines if ln.strip() and not ln.startswith("#")][::step]
        (dst / "annotations" / name).write_text("\n".join(header + body) + "\n")
        if name != "list.txt":
            kept |= {ln.split()[0] for ln in body}
    listed_full = _listed_stems(src / "annotations")
    for p in (src / "images").iterdir():
        if p.stem in kept or p.stem not in listed_full:  # the unlisted quirk files stay at every size
            os.link(p, dst / "images" / p.name)
    return {"catsdogs": n_cd, "pets": len(kept)}


def _generation_order(p: Path) -> tuple[int, str]:
    stem = p.stem
    return (int(stem.rsplit("_", 1)[1]) if "_" in stem else 0, stem)


# ----------------------------------------------------------------------------------------------
# 2. One `dvc repro` per size, every process sampled


_STAGE = re.compile(r"-m\s*stages\.(\w+)\s+(\S+)")


def _stage_of(proc: psutil.Process) -> str | None:
    """``<stage>@<ds>`` for a ``python -m stages.<stage> <ds>`` process (its children count to it too)."""
    match = _STAGE.search(" ".join(proc.cmdline()))
    return f"{match.group(1)}@{match.group(2)}" if match else None


def _du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


# Each stage's outs under the work copy (see dvc.yaml), for the disk-used column.
_OUTS = {
    "download": ["data/raw/{ds}"],
    "prepare": ["data/prepared/{ds}"],
    "embed": ["data/embeddings/{ds}"],
    "train_logreg": ["data/models/{ds}/logreg.npz", "metrics/{ds}/logreg_search.json"],
    "train_head": ["data/models/{ds}/head.pt", "data/models/{ds}/head.json", "metrics/{ds}/train_head"],
    "evaluate": ["metrics/{ds}.json", "metrics/{ds}/logreg", "metrics/{ds}/head", "metrics/{ds}/samples.png"],
    "render": ["data/render/{ds}", "metrics/{ds}/render.json", "metrics/{ds}/render_eps.json"],
    "explain": ["data/explain/{ds}", "metrics/{ds}/explain.json", "metrics/{ds}/explain_headline.json"],
}
# Stages whose work is fixed by their params (render.n_images, explain.n_images), not by the dataset.
_FIXED_WORK = ("render", "explain")


def run_size(label: str, mirror: Path, counts: dict[str, int], workdir: Path, targets: list[str] = ()) -> dict:
    slug = label.replace("/", "_")
    work = Path(tempfile.mkdtemp(prefix=f"repo-{slug}-", dir=workdir))
    try:
        copy_repo(work)
        # Not a git clone: DVC is told so (a CI-style clone would need the changes committed).
        (work / ".dvc" / "config.local").write_text("[core]\n    no_scm = true\n")
        params = (work / "params.yaml").read_text()
        params = re.sub(r"(?m)^(\s+source:)\s*\S+", r"\1 mirror", params, count=1)
        params = re.sub(r"(?m)^(\s+mirror:)\s*\S+", rf"\1 {mirror}", params, count=1)
        (work / "params.yaml").write_text(params)
        env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(work / ".site-cache"),
               "PYTHONPATH": str(work)}
        log = open(workdir / f"repro-{slug}.log", "w")
        t0 = time.perf_counter()
        proc = psutil.Popen(["dvc", "repro", *targets], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
        with PssSampler(proc, group=_stage_of) as sampler:  # every process of the run, per stage
            # A snapshot every 20 s: a full-size run stopped early still shows the stages it finished.
            while (rc := proc.poll()) is None:
                time.sleep(20)
                snapshot = {stage: {"seconds_so_far": round(sampler.last[stage] - sampler.first[stage], 1),
                                    "peak_pss_mb": round(sampler.peak[stage] / 2**20, 1)}
                            for stage in list(sampler.first)}
                (workdir / f"partial-{slug}.json").write_text(json.dumps(
                    {"label": label, "counts": counts, "elapsed": round(time.perf_counter() - t0, 1),
                     "stages": snapshot}, indent=1))
        total = time.perf_counter() - t0
        log.close()
        if rc != 0:
            raise SystemExit(f"scale.py: dvc repro failed at size {label}; see {workdir / f'repro-{slug}.log'}")
        stages = {}
        for stage in sampler.first:
            name, ds = stage.split("@")
            seconds = sampler.last[stage] - sampler.first[stage]
            row = {"seconds": round(seconds, 2), "peak_pss_mb": round(sampler.peak[stage] / 2**20, 1),
                   "disk_mb": round(sum(_du(work / o.format(ds=ds)) for o in _OUTS.get(name, [])) / 2**20, 2),
                   "images": counts[ds]}
            if name == "train_head":
                head = json.loads((work / f"data/models/{ds}/head.json").read_text())
                epochs = head["epochs_run"] + (head["best_epoch"] if head["params"].get("refit") else 0)
                row.update(epochs_run=head["epochs_run"], best_epoch=head["best_epoch"], epochs_total=epochs,
                           seconds_per_epoch=round(seconds / max(epochs, 1), 3))
            if name == "render":  # its work: images attacked (capped by render.n_images per pair)
                attacks = json.loads((work / f"metrics/{ds}/render.json").read_text())["attacks"]
                row["attacked"] = sum(v["n_images"] for v in attacks.values() if isinstance(v, dict) and "n_images" in v)
            if name == "prepare":
                rejected = (work / f"data/prepared/{ds}/rejected.csv").read_text().count("\n") - 1
                row["rejected"] = rejected
            stages[stage] = row
        return {"label": label, "counts": counts, "total_seconds": round(total, 1),
                "peak_pss_total_mb": round(sampler.peak_total / 2**20, 1),
                "cache_mb": round(_du(work / ".dvc" / "cache") / 2**20, 1), "stages": stages,
                "metrics": {ds: json.loads((work / f"metrics/{ds}.json").read_text())
                            for ds in counts if (work / f"metrics/{ds}.json").exists()}}
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# 3. The table


_ORDER = ["download", "prepare", "embed", "train_logreg", "train_head", "finetune", "scratch", "evaluate", "render",
          "explain"]


def print_table(results: list[dict], out=sys.stdout) -> None:
    results = sorted(results, key=lambda r: sum(r["counts"].values()))
    stages = sorted({s for r in results for s in r["stages"]},
                    key=lambda s: (s.split("@")[1], _ORDER.index(s.split("@")[0]) if s.split("@")[0] in _ORDER else 99))
    print("| stage | images | wall s | images/s | peak PSS MB | disk MB | head epochs (s/epoch) |", file=out)
    print("|---|---:|---:|---:|---:|---:|---|", file=out)
    for stage in stages:
        for r in results:
            row = r["stages"].get(stage)
            if row is None:
                continue
            epochs = (f"{row['epochs_total']} ({row['epochs_run']} + refit {row['epochs_total'] - row['epochs_run']}; "
                      f"{row['seconds_per_epoch']:.2f})" if "epochs_total" in row else "")
            ips = row["images"] / row["seconds"] if row["seconds"] > 0 else float("nan")
            print(f"| {stage} | {row['images']:,} | {row['seconds']:.1f} | {ips:,.0f} | {row['peak_pss_mb']:,.0f} "
                  f"| {row['disk_mb']:,.1f} | {epochs} |", file=out)
    if len(results) >= 2:
        small, large = results[0], results[-1]
        print(f"\nGrowth from {small['label']} to {large['label']}: time ~ n^a, memory ratio "
              "(targets: a <= 1.1, memory < 1.5x; render and explain: time and memory flat, < 1.5x)", file=out)
        print("| stage | n ratio | time exponent a | memory ratio | within target |", file=out)
        print("|---|---:|---:|---:|---|", file=out)
        for stage in stages:
            a, b = small["stages"].get(stage), large["stages"].get(stage)
            if not a or not b:
                continue
            n_ratio = b["images"] / a["images"]
            t_exp = math.log(max(b["seconds"], 1e-3) / max(a["seconds"], 1e-3)) / math.log(n_ratio)
            m_ratio = b["peak_pss_mb"] / max(a["peak_pss_mb"], 1e-3)
            ok = t_exp <= 1.1 and m_ratio < 1.5
            if stage.split("@")[0] in _FIXED_WORK:
                ok = m_ratio < 1.5 and b["seconds"] / max(a["seconds"], 1e-3) < 1.5
            print(f"| {stage} | {n_ratio:.1f} | {t_exp:.2f} | {m_ratio:.2f} | {'yes' if ok else 'NO'} |", file=out)
        if len(results) >= 3:
            # render/explain do work capped by their params (render.n_images per pair, transfer_per_class
            # per class); on a small size the caps may not be reached yet, so also compare the two largest.
            mid = results[-2]
            print(f"\nFixed-work stages from {mid['label']} to {large['label']} (time and memory ratio; attacked images):",
                  file=out)
            for stage in stages:
                a, b = mid["stages"].get(stage), large["stages"].get(stage)
                if a and b and stage.split("@")[0] in _FIXED_WORK:
                    t_ratio, m_ratio = b["seconds"] / max(a["seconds"], 1e-3), b["peak_pss_mb"] / max(a["peak_pss_mb"], 1e-3)
                    attacked = f"; {a.get('attacked', '?')} -> {b.get('attacked', '?')} attacked" if "attacked" in b else ""
                    print(f"- {stage}: time x{t_ratio:.2f}, memory x{m_ratio:.2f}{attacked}", file=out)
    for r in results:
        print(f"\n{r['label']}: dvc repro {r['total_seconds']:.0f} s in all, peak PSS of all processes "
              f"{r['peak_pss_total_mb']:,.0f} MB, DVC cache {r['cache_mb']:,.0f} MB", file=out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "petprobe-scale")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.125, 1.0, 0.5],
                    help="sizes as fractions of the full datasets, run in this order (default: 1/8, full, 1/2)")
    ap.add_argument("--targets", nargs="*", default=[], help="dvc repro only these stages (and what they need)")
    ap.add_argument("--workers", type=int, default=2, help="processes writing the mirrors' variants")
    ap.add_argument("--mirrors-only", action="store_true", help="build the full mirrors and stop")
    ap.add_argument("--table", action="store_true", help="print the table of <workdir>/results.json and stop")
    args = ap.parse_args()
    workdir = args.workdir.resolve()
    if workdir.is_relative_to(REPO):
        raise SystemExit("scale.py: --workdir must be outside the repo")
    workdir.mkdir(parents=True, exist_ok=True)
    results_path = workdir / "results.json"
    if args.table:
        results = json.loads(results_path.read_text()) if results_path.exists() else []
        print_table(results)
        done = {r["label"] for r in results}
        for partial in sorted(workdir.glob("partial-*.json")):
            snap = json.loads(partial.read_text())
            if snap["label"] in done:
                continue
            print(f"\nUnfinished size {snap['label']} {snap['counts']}: stopped after {snap['elapsed']:.0f} s; "
                  "stages seen so far (the last one may be cut short):")
            for stage, row in snap["stages"].items():
                print(f"| {stage} | {snap['counts'][stage.split('@')[1]]:,} | {row['seconds_so_far']:.1f} "
                      f"| {row['peak_pss_mb']:,.0f} MB |")
        return
    full = workdir / "mirror-full"
    build_mirrors(full, args.workers)
    if args.mirrors_only:
        return
    results = json.loads(results_path.read_text()) if results_path.exists() else []
    for fraction in args.fractions:
        label = "full" if fraction >= 1 else f"1/{round(1 / fraction)}"
        mirror = full if fraction >= 1 else workdir / f"mirror-{round(1 / fraction)}"
        counts = fraction_mirror(full, fraction, mirror)
        print(f"size {label}: {counts} ... dvc repro", file=sys.stderr)
        result = run_size(label, mirror, counts, workdir, args.targets)
        results = [r for r in results if r["label"] != label] + [result]
        results_path.write_text(json.dumps(results, indent=1))
        print(f"size {label}: {result['total_seconds']:.0f} s", file=sys.stderr)
    print_table(results)


if __name__ == "__main__":
    main()
