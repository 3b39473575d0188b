"""Issue 28's hostile inputs, measured: wall time and peak memory of each case, each in a fresh process.

Not a test (it takes minutes, and the old code's cases take far longer unless stopped). It

1. makes the hostile files of the issue (tests/hostile_files.py) and a small trained repository
   (an image folder of 4 cat photos and 4 dog photos, the dog class named ``$\\foo$``; download,
   prepare, embed, train_logreg, train_head, finetune and scratch (both switched off)) under --workdir,
   all with the petprobe code under test (--code: a checkout, e.g. the commit before the fix);
2. runs every case as ``python -c <code>`` with ``PYTHONPATH=<code>`` under ``/usr/bin/time``
   (exact peak RSS of the process, imports included), watched every 20 ms with psutil: a case is
   killed past --timeout seconds or once its processes hold --memory-cap GiB, so the old code's
   22 GB read of /dev/zero or 8.7 GB head cannot take the machine down (the table then says ">");
3. prints one row per case: the seconds of the case itself ("op": the libraries it needs, torch
   for instance, are imported before its clock starts, since importing torch takes 3-40 s here
   depending on the load), the whole process's seconds, peak RSS (MiB), exit status, stdout and
   stderr lines, whether a traceback was printed, and the last line of stderr (or of stdout).

    python benchmarks/hostile_inputs.py                                   # this checkout
    git worktree add /tmp/base28 6d09045
    python benchmarks/hostile_inputs.py --code /tmp/base28 --label base   # the code before the fix

Results are also written as JSON to <workdir>/<label>.json. Timings depend on the machine's load:
say what else ran.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from hostile_files import many_page_tiff, png16, scan_bomb_jpeg, with_trailing_junk  # noqa: E402

SAMPLE = REPO.parent / "shared" / "datasets" / "PetImages"
# 1 KB of YAML: 8 levels of 9 aliases each, 9**8 = 43 million strings once expanded.
ALIAS_BOMB = "[&a [x, x, x, x, x, x, x, x, x], " + ", ".join(
    f"&{c} [{', '.join(['*' + p] * 9)}]" for p, c in zip("abcdefg", "bcdefgh")) + "]"
ODD_CLASS = "$\\foo$"  # a class folder name matplotlib would read as mathtext


def make_inputs(work: Path) -> dict[str, Path]:
    files = work / "files"
    files.mkdir(parents=True, exist_ok=True)
    out = {"photo": files / "photo.jpg", "bomb": files / "bomb.jpg", "pages": files / "pages.tif",
           "gray16": files / "gray16.png", "junk1g": files / "junk1g.jpg", "newline": files / "a\nforged.jpg: Cat 1.000.jpg"}
    shutil.copyfile(SAMPLE / "Cat" / "5.jpg", out["photo"])
    out["bomb"].write_bytes(scan_bomb_jpeg())
    out["pages"].write_bytes(many_page_tiff(60_000))
    out["gray16"].write_bytes(png16(7071))
    with_trailing_junk(out["junk1g"], (SAMPLE / "Cat" / "5.jpg").read_bytes(), 2**30)
    shutil.copyfile(SAMPLE / "Dog" / "5.jpg", out["newline"])
    with tarfile.open(files / "longname.tar", "w") as tar:
        for name in ("ok/1.jpg", "ok/" + "n" * 300 + ".jpg"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"jpg"))
    return out


# Imported before a case's clock starts; the case's own time is printed at exit.
WARM = ("import atexit, sys, time\n{imports}\n_started = time.perf_counter()\n"
        "atexit.register(lambda: print(f'OP_SECONDS {{time.perf_counter() - _started:.2f}}', file=sys.stderr))\n")
LIGHT, HEAVY = "import numpy, pandas, yaml, PIL.Image", "import numpy, pandas, yaml, PIL.Image, torch, torchvision, matplotlib"


def run_case(code: str, cwd: Path, pythonpath: Path, timeout: float, cap_bytes: int, imports: str = HEAVY) -> dict:
    """Run ``python -c code``; return seconds, peak RSS, status and what it printed."""
    code = WARM.format(imports=imports) + textwrap.dedent(code)
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "PETPROBE_PROGRESS": "off"}
    err_path = cwd / ".case-stderr"
    with open(err_path, "w") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(["/usr/bin/time", "-f", "MAXRSS_KB %M", sys.executable, "-c", code],
                                cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        watched, killed, sampled = psutil.Process(proc.pid), None, 0
        while proc.poll() is None:
            try:
                rss = sum(p.memory_info().rss for p in watched.children(recursive=True))
            except psutil.Error:
                rss = 0
            sampled = max(sampled, rss)
            over_time = time.perf_counter() - started > timeout
            if killed is None and (over_time or rss > cap_bytes):
                killed = "timeout" if over_time else "memory cap"
                for child in watched.children(recursive=True):
                    child.kill()
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        stdout = proc.stdout.read()
    lines = err_path.read_text(errors="replace").splitlines()
    peak_kb = next((int(line.split()[1]) for line in reversed(lines) if line.startswith("MAXRSS_KB ")), 0)
    op = next((float(line.split()[1]) for line in reversed(lines) if line.startswith("OP_SECONDS ")), None)
    lines = [line for line in lines if not line.startswith(("MAXRSS_KB ", "OP_SECONDS ", "Command terminated by signal",
                                                            "Command exited with non-zero status"))]
    return {"op_seconds": op, "seconds": round(seconds, 2), "peak_mib": round(max(peak_kb * 1024, sampled) / 2**20),
            "killed": killed, "exit": proc.returncode, "stderr_lines": len(lines),
            "stdout_lines": len(stdout.splitlines()),
            "traceback": any(line.startswith("Traceback") for line in lines),
            "last": (lines[-1] if lines else (stdout.strip().splitlines() or [""])[-1])[:160]}


def setup_repo(work: Path, code: Path, inputs: dict, reuse: bool = False) -> Path:
    """A trained repository on a small image folder (class folders Cat and $\\foo$), with the code under test."""
    photos, repo = work / "photos", work / "repo"
    if reuse and (repo / "data/models/tiny/head.pt").is_file():
        return repo
    shutil.rmtree(repo, ignore_errors=True)
    shutil.rmtree(photos, ignore_errors=True)
    for label, source in (("Cat", "Cat"), (ODD_CLASS, "Dog")):
        (photos / label).mkdir(parents=True)
        for n in range(1, 5):
            shutil.copyfile(SAMPLE / source / f"{n}.jpg", photos / label / f"{n}.jpg")
    repo.mkdir()
    (repo / "params.yaml").write_text(
        f"datasets: [tiny]\nimagefolders: {{tiny: '{photos}'}}\nembed: {{num_workers: 0, precision: fp32}}\n"
        "logreg: {c_steps: 2}\nhead: {hidden: 16, max_epochs: 3, patience: 1}\n")
    (repo / "dvc.yaml").write_text("stages: {}\n")
    for stage in ("download", "prepare", "embed", "train_logreg", "train_head", "finetune", "scratch"):
        result = run_case(f"import sys\nfrom petprobe.errors import run_stage\nfrom stages import {stage}\n"
                          f"sys.argv = ['{stage}', 'tiny']\nrun_stage({stage}.main)", repo, code, 900, 8 * 2**30)
        if result["exit"] != 0:
            raise SystemExit(f"setup: {stage} failed: {result}")
    return repo


def copy_repo(repo: Path, dest: Path) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(repo, dest, symlinks=True)
    return dest


def stage(name: str, ds: str = "tiny") -> str:
    return f"import sys\nfrom petprobe.errors import run_stage\nfrom stages import {name}\nsys.argv = ['{name}', '{ds}']\nrun_stage({name}.main)"


def with_npy_header(data: bytes, shape: tuple) -> bytes:
    """``.npy`` bytes with their header replaced by one claiming ``shape`` (same dtype, same data)."""
    fh = io.BytesIO(data)
    np.lib.format.read_magic(fh)
    _, _, dtype = np.lib.format.read_array_header_1_0(fh)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                                               "shape": shape})
    return buf.getvalue() + data[fh.tell():]


def predict(path: Path, model: str = "logreg") -> str:
    return f"import sys\nfrom petprobe.cli import main\nsys.exit(main(['predict', {str(path)!r}, '--dataset', 'tiny', '--model', '{model}']))"


def cases(work: Path, repo: Path, inputs: dict) -> list[tuple[str, str, str, Path]]:
    """(found row, name, code, working folder) of every case."""
    out = []
    for key in ("bomb", "pages", "gray16", "junk1g"):
        path = inputs[key]
        out.append(("1-4", f"check {key}", f"from petprobe.data.images import inspect_image\nprint(inspect_image({str(path)!r}))", repo))
        out.append(("1-4", f"embed read {key}", "from petprobe.backbones import get_backbone\n"
                    "from petprobe.data.images import load_rgb_tensor\ntry:\n"
                    f"    print(get_backbone('efficientnet_lite0').preprocessing.crop_uint8(load_rgb_tensor({str(path)!r})).shape)\n"
                    "except Exception as err:\n    print(type(err).__name__, err)", repo))
        out.append(("1-4", f"predict {key}", predict(path), repo))
    out.append(("floor", "predict a normal photo", predict(inputs["photo"]), repo))
    for key in ("bomb", "pages", "gray16"):  # prepare of the small folder with the file added
        folder = work / f"prep-{key}"
        photos = folder / "photos"
        if not photos.exists():
            shutil.copytree(work / "photos", photos)
            shutil.copyfile(inputs[key], photos / "Cat" / inputs[key].name)
        (folder / "params.yaml").write_text(f"datasets: [tiny]\nimagefolders: {{tiny: '{photos}'}}\n")
        out.append(("1-4", f"download+prepare with {key}", "import sys\nfrom petprobe.errors import run_stage\n"
                    "from stages import download, prepare\ndownload.main('tiny')\nsys.argv = ['prepare', 'tiny']\n"
                    "run_stage(prepare.main)", folder))
    for row, (name, hostile) in enumerate((("/dev/zero", "/dev/zero"), ("outside file", "/etc/hostname"))):
        folder = copy_repo(repo, work / f"manifest-{row}")
        manifest = folder / "data/prepared/tiny/manifest.csv"
        lines = manifest.read_text().splitlines()
        lines[1] = hostile + "," + lines[1].split(",", 1)[1]
        manifest.write_text("\n".join(lines) + "\n")
        out.append(("2", f"embed, manifest row {name}", stage("embed"), folder))
    folder = copy_repo(repo, work / "link-zero")
    link = next((folder / "data/raw/tiny/Cat").glob("*.jpg"))
    link.unlink()
    link.symlink_to("/dev/zero")
    out.append(("2", "embed, a raw file swapped for a link to /dev/zero", stage("embed"), folder))
    out.append(("5", f"evaluate, a class named {ODD_CLASS}", stage("evaluate"), copy_repo(repo, work / "evaluate")))
    folder = copy_repo(repo, work / "seed")
    (folder / "params.yaml").write_text((folder / "params.yaml").read_text().replace("logreg: {c_steps: 2}",
                                                                                     "logreg: {c_steps: 2, seed: 4294967296}"))
    out.append(("6", "train_logreg, logreg.seed 2**32", stage("train_logreg"), folder))
    # 8. tampered artefacts
    folder = copy_repo(repo, work / "npy")
    npy = folder / "data/embeddings/tiny/test.npy"
    npy.write_bytes(with_npy_header(npy.read_bytes(), (10**9, 1280)))
    out.append(("8", "evaluate, test.npy header claims (1e9, 1280)", stage("evaluate"), folder))
    folder = copy_repo(repo, work / "npz")
    npz = folder / "data/models/tiny/logreg.npz"
    with zipfile.ZipFile(repo / "data/models/tiny/logreg.npz") as src, zipfile.ZipFile(npz, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info.filename, with_npy_header(data, (1, 10**9)) if info.filename == "coef.npy" else data)
    out.append(("8", "predict --model logreg, coef header claims (1, 1e9)", predict(inputs["photo"]), folder))
    for name, change in (("dropout NaN", {"params": {"dropout": float("nan")}}), ("n_features_in 1e9", {"n_features_in": 10**9}),
                         ("10^6 classes", {"classes": [f"c{i}" for i in range(10**6)]}),
                         ("hidden 400k", {"params": {"hidden": 400_000}}), ("hidden 9 (a mismatch)", {"params": {"hidden": 9}})):
        folder = copy_repo(repo, work / f"head-{name.split()[0]}")
        path = folder / "data/models/tiny/head.json"
        config = json.loads(path.read_text())
        for key, value in change.items():
            config[key] = {**config[key], **value} if isinstance(value, dict) else value
        path.write_text(json.dumps(config))
        out.append(("8" if "mismatch" not in name else "10", f"predict --model head, head.json {name}",
                    predict(inputs["photo"], "head"), folder))
    folder = work / "pins"
    (folder / "data/downloads").mkdir(parents=True, exist_ok=True)
    (folder / "data/downloads/pinned.json").write_text(json.dumps({"kagglecatsanddogs_5340.zip": "abc"}))
    (folder / "params.yaml").write_text("datasets: [catsdogs]\ndata: {source: official}\n")
    out.append(("8", "download, a malformed pinned.json entry", stage("download", "catsdogs"), folder))
    # 9. params.yaml shapes
    for name, text in (("datasets nested 20,000 deep", "datasets: " + "[" * 20_000 + "]" * 20_000 + "\n"),
                       ("an 8-level alias bomb as backbone", f"datasets: [pets]\nbackbone: {ALIAS_BOMB}\n")):
        folder = work / f"params-{name.split()[0]}"
        folder.mkdir(exist_ok=True)
        (folder / "params.yaml").write_text(text)
        out.append(("9", f"prepare, params.yaml with {name}", stage("prepare", "pets"), folder))
    # 10. small ones
    out.append(("10", "predict, a file name holding a newline (stdout lines)", predict(inputs["newline"]), repo))
    extra = work / "files" / "extra.jpg"
    buf = io.BytesIO()
    Image.open(SAMPLE / "Cat" / "1.jpg").convert("RGB").resize((48, 32)).save(buf, "JPEG")
    extra.write_bytes(buf.getvalue()[:-2] + b"\x12\x34" * 10 + buf.getvalue()[-2:])
    out.append(("10", "predict, a JPEG libjpeg warns about (stderr lines)", predict(extra), repo))
    out.append(("10", "train_head folder mode", "import os, stat\nprint(oct(stat.S_IMODE(os.stat('metrics/tiny/train_head').st_mode)))",
                repo))
    out.append(("10", "extract, a tar member name of 300 characters",
                "from petprobe.data.unpack import extract\nskipped = []\n"
                f"print(extract({str(work / 'files' / 'longname.tar')!r}, 'data/unpacked', skipped=skipped), skipped)",
                copy_repo(repo, work / "tar")))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", type=Path, default=REPO, help="the petprobe checkout to measure (default: this one)")
    parser.add_argument("--label", default="this", help="name of this run in the output (default: this)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/petprobe-hostile"))
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before a case is killed (default 120)")
    parser.add_argument("--memory-cap", type=float, default=4.0, help="GiB before a case is killed (default 4)")
    parser.add_argument("--only", default="", help="run only the cases whose name contains this text")
    parser.add_argument("--reuse", action="store_true", help="keep the trained repository of an earlier run")
    args = parser.parse_args()
    work = (args.workdir / args.label).resolve()
    work.mkdir(parents=True, exist_ok=True)
    code = args.code.resolve()
    inputs = make_inputs(work)
    repo = setup_repo(work, code, inputs, args.reuse)
    results = []
    print(f"{'row':5} {'case':58} {'op s':>7} {'all s':>7} {'MiB':>7} {'exit':>4} {'out':>3} {'err':>3} {'tb':>2}  "
          "last line", flush=True)
    for row, name, case, cwd in cases(work, repo, inputs):
        if args.only and args.only not in name:
            continue
        light = name.startswith(("check ", "prepare, params", "train_head folder", "extract"))
        r = run_case(case, cwd, code, args.timeout, int(args.memory_cap * 2**30), LIGHT if light else HEAVY)
        results.append({"row": row, "case": name, **r})
        mark = ">" if r["killed"] else ""
        print(f"{row:5} {name[:58]:58} {mark + str(r['op_seconds']):>7} {mark + str(r['seconds']):>7} "
              f"{mark + str(r['peak_mib']):>7} {r['exit']:>4} "
              f"{r['stdout_lines']:>3} {r['stderr_lines']:>3} {'y' if r['traceback'] else '-':>2}  "
              f"{r['killed'] or r['last']}", flush=True)
        (work.parent / f"{args.label}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
