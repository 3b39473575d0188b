"""Messy image files, made from real sample photos: each is kept (and loads as upright 8-bit RGB)
or rejected with a reason in rejected.csv; nothing crashes and the raw files are never modified.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import PETIMAGES, REPO
from petprobe.backbones import get_backbone
from petprobe.data.images import MAX_PIXELS, inspect_image, load_rgb
from petprobe.device import Precision
from petprobe.embedding.embed import embed_images
from stages import download, prepare

CAT, DOG = PETIMAGES / "Cat", PETIMAGES / "Dog"


def photo(path: Path = CAT / "1.jpg", size: tuple[int, int] | None = None) -> Image.Image:
    im = Image.open(path).convert("RGB")
    return im.resize(size) if size else im


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, bit_depth: int, color_type: int, idat: bytes) -> bytes:
    """A PNG written by hand, for what PIL will not write (48-bit RGB) or should not be asked to."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def zero_rows(width: int, height: int) -> bytes:
    """zlib stream of ``height`` unfiltered rows of ``width`` zero bytes, compressed in pieces."""
    z, row = zlib.compressobj(9), bytes(width + 1)
    return b"".join(z.compress(row) for _ in range(height)) + z.flush()


def rgb16_png(rgb8: np.ndarray) -> bytes:
    """48-bit RGB PNG whose 16-bit samples are v * 257 (so v is the exact 8-bit value)."""
    h, w, _ = rgb8.shape
    rows = (rgb8.astype(">u2") * 257).reshape(h, w * 3)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    return png(w, h, 16, 2, zlib.compress(raw))


def save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def animated_gif() -> bytes:
    first = photo(DOG / "1.jpg", (96, 80))
    red = Image.new("RGB", (96, 80), (255, 0, 0))
    buf = io.BytesIO()
    first.save(buf, "GIF", save_all=True, append_images=[red], duration=100, loop=0)
    return buf.getvalue()


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned; rotate 90 degrees clockwise to view
    return save(photo(CAT / "2.jpg"), "JPEG", quality=92, exif=exif)


def rgba_png() -> bytes:
    im = photo(CAT / "3.jpg", (64, 64)).convert("RGBA")
    a = np.asarray(im).copy()
    a[:, :32, 3] = 0  # the left half fully transparent
    return save(Image.fromarray(a, "RGBA"), "PNG")


# name -> (bytes or a real sample file, expected: None = kept, else a fragment of the reason)
ODD_FILES = {
    "cat/1.jpg": (CAT / "1.jpg", None),
    "cat/2.jpg": (CAT / "2.jpg", None),
    "cat/3.jpg": (CAT / "3.jpg", None),
    "cat/666.jpg": (CAT / "666.jpg", "empty file (0 bytes)"),  # real: 0 bytes in the Microsoft archive
    "cat/Thumbs.db": (CAT / "Thumbs.db", "not an image"),  # real Windows thumbnail cache
    "cat/.DS_Store": (b"\x00\x00\x00\x01Bud1\x00\x00\x10\x00" + bytes(500), "not an image"),
    "cat/cmyk.jpg": (lambda: save(photo(CAT / "4.jpg").convert("CMYK"), "JPEG", quality=95), None),
    "cat/gray.jpg": (lambda: save(photo(CAT / "5.jpg").convert("L"), "JPEG"), None),
    "cat/png named.jpg": (lambda: save(photo(CAT / "6.jpg"), "PNG"), None),
    "cat/rotated.jpg": (exif_rotated_jpeg, None),
    "cat/notes.jpg": (b"these are my notes, not a photo\n", "not an image"),
    "cat/café, ünï.JPG": (CAT / "7.jpg", None),  # comma and non-ASCII in the name: CSV must survive
    "cat/huge header.png": (lambda: png(100_000, 100_000, 8, 0, zlib.compress(b"\x00" * 64)), "too large"),
    "cat/unreadable.jpg": (CAT / "8.jpg", "permission denied"),  # chmod 000 in data/raw, see LOCKED
    "dog/1.jpg": (DOG / "1.jpg", None),
    "dog/2.jpg": (DOG / "2.jpg", None),
    "dog/3.jpg": (DOG / "3.jpg", None),
    "dog/11702.jpg": (DOG / "11702.jpg", "corrupt or truncated"),  # real: truncated in the archive
    "dog/cut.jpg": (lambda: (DOG / "4.jpg").read_bytes()[:12_000], "corrupt or truncated"),
    "dog/gray16.png": (lambda: save(Image.fromarray(np.asarray(photo(DOG / "5.jpg").convert("L"), np.uint16) * 257),
                                    "PNG"), None),
    "dog/rgb16.png": (lambda: rgb16_png(np.asarray(photo(DOG / "6.jpg", (80, 60)))), None),
    "dog/animated.gif": (animated_gif, None),
    "dog/transparent.png": (rgba_png, None),
    "dog/64 megapixels.png": (lambda: png(8000, 8000, 8, 0, zero_rows(8000, 8000)), "too large"),
    ".DS_Store": (b"\x00\x00\x00\x01Bud1" + bytes(100), "not an image"),  # stray, outside any class folder
}


def tree_state(root: Path) -> dict[str, tuple[str, int]]:
    """sha256 and permission bits of every file: what 'never modified' must leave unchanged."""
    state = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            mode = stat.S_IMODE(path.stat().st_mode)
            os.chmod(path, mode | stat.S_IRUSR)  # so a non-root run can hash the chmod-000 file
            state[path.relative_to(root).as_posix()] = (hashlib.sha256(path.read_bytes()).hexdigest(), mode)
            os.chmod(path, mode)
    return state


def unprivileged() -> list[str]:
    """A command prefix under which chmod 000 stops reading.

    Root reads any file (CAP_DAC_OVERRIDE), so as root the command runs with those capabilities
    dropped (setpriv); a normal user needs nothing. Returns None where neither is possible.
    """
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv"):
        caps = "-dac_override,-dac_read_search"
        return ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"]
    return None


def run_stage(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    prefix = unprivileged() or []
    result = subprocess.run([*prefix, sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-2000:]
    return result


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("odd") / "odd"
    for name, (source, _) in ODD_FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = source.read_bytes() if isinstance(source, Path) else source() if callable(source) else source
        path.write_bytes(data)
    return root


@pytest.fixture(scope="module")
def prepared(odd_folder, tmp_path_factory):
    """download + prepare of the odd folder as an imagefolder dataset, in a scratch working dir.

    prepare runs as its own process without the privilege to read a chmod-000 file (see unprivileged).
    """
    work = tmp_path_factory.mktemp("work")
    (work / "params.yaml").write_text(f"datasets: [odd]\nimagefolders: {{odd: '{odd_folder}'}}\n")
    before_source = tree_state(odd_folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        download.main("odd")
    raw = work / "data/raw/odd"
    os.chmod(raw / "cat/unreadable.jpg", 0)
    after_download = tree_state(raw)
    run_stage(["stages.prepare", "odd"], work)
    raw_unchanged = tree_state(raw) == after_download
    os.chmod(raw / "cat/unreadable.jpg", 0o644)  # so later tests (and tmp cleanup) can read it
    return {
        "work": work,
        "raw": raw,
        "source_unchanged": tree_state(odd_folder) == before_source,
        "raw_unchanged": raw_unchanged,
        "manifest": pd.read_csv(work / "data/prepared/odd/manifest.csv", dtype=str, keep_default_na=False),
        "rejected": pd.read_csv(work / "data/prepared/odd/rejected.csv", dtype=str, keep_default_na=False),
    }


@pytest.mark.integration
def test_every_odd_file_is_kept_or_rejected_with_its_reason(prepared):
    raw = prepared["raw"].relative_to(prepared["work"]).as_posix()
    kept = {p.removeprefix(raw + "/") for p in prepared["manifest"].path}
    rejected = dict(zip((p.removeprefix(raw + "/") for p in prepared["rejected"].path), prepared["rejected"].reason))
    for name, (_, expected) in ODD_FILES.items():
        if name == "cat/unreadable.jpg" and unprivileged() is None:
            expected = None  # root without setpriv: the file *is* readable to prepare, so it is kept
        if expected is None:
            assert name in kept, (name, rejected.get(name))
        else:
            assert expected in rejected.get(name, ""), (name, rejected.get(name))
    assert kept | set(rejected) == set(ODD_FILES)  # every file accounted for, none twice
    assert not kept & set(rejected)
    labels = dict(zip((p.removeprefix(raw + "/") for p in prepared["manifest"].path), prepared["manifest"].label))
    assert all(labels[name] == name.split("/")[0] for name in kept)


@pytest.mark.integration
def test_raw_and_source_files_are_never_modified(prepared):
    assert prepared["source_unchanged"]
    assert prepared["raw_unchanged"]


@pytest.mark.integration
def test_every_kept_file_loads_as_rgb_and_embeds_to_finite_vectors(prepared):
    paths = [str(prepared["work"] / p) for p in prepared["manifest"].path]
    for path in paths:
        im = load_rgb(path)
        assert im.mode == "RGB" and min(im.size) > 0
    backbone = get_backbone("efficientnet_lite0")
    out = np.concatenate(list(embed_images(backbone.build(), backbone.preprocessing, paths, batch_size=8,
                                           num_workers=0, device=torch.device("cpu"),
                                           precision=Precision("fp32", None), desc="odd")))
    assert np.isfinite(out).all() and (np.abs(out).sum(axis=1) > 0).all()


@pytest.mark.unit
def test_exif_orientation_is_applied(odd_folder):
    path = odd_folder / "cat/rotated.jpg"
    with Image.open(path) as stored:
        stored_rgb = np.asarray(stored.convert("RGB"))
    upright = np.asarray(load_rgb(path))
    assert upright.shape == (stored_rgb.shape[1], stored_rgb.shape[0], 3) != stored_rgb.shape
    assert np.array_equal(upright, np.rot90(stored_rgb, k=-1))  # orientation 6: 90 degrees clockwise


@pytest.mark.unit
def test_sixteen_bit_images_are_scaled_not_clipped(odd_folder):
    gray8 = np.asarray(photo(DOG / "5.jpg").convert("L"))
    got = np.asarray(load_rgb(odd_folder / "dog/gray16.png"))
    assert np.abs(got[..., 0].astype(int) - gray8).max() <= 1 and (got[..., 0] == got[..., 2]).all()
    rgb8 = np.asarray(photo(DOG / "6.jpg", (80, 60)))
    assert np.abs(np.asarray(load_rgb(odd_folder / "dog/rgb16.png")).astype(int) - rgb8).max() <= 1


@pytest.mark.unit
def test_cmyk_grayscale_and_transparency_become_sensible_rgb(odd_folder):
    cmyk = np.asarray(load_rgb(odd_folder / "cat/cmyk.jpg")).astype(int)
    assert np.abs(cmyk - np.asarray(photo(CAT / "4.jpg"))).mean() < 6  # JPEG loss only, no inverted colours
    gray = np.asarray(load_rgb(odd_folder / "cat/gray.jpg"))
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    clear = np.asarray(load_rgb(odd_folder / "dog/transparent.png"))
    assert (clear[:, :32] == 255).all() and (clear[:, 32:] < 250).any()  # transparent shows as white


@pytest.mark.unit
def test_animated_gif_gives_its_first_frame(odd_folder):
    got = np.asarray(load_rgb(odd_folder / "dog/animated.gif")).astype(int)
    with Image.open(odd_folder / "dog/animated.gif") as gif:
        assert gif.n_frames == 2
        first = np.asarray(gif.convert("RGB")).astype(int)
    assert np.array_equal(got, first)
    assert np.abs(got - [255, 0, 0]).mean() > 50  # not the red second frame


@pytest.mark.unit
def test_decompression_bombs_are_refused_before_decoding(odd_folder):
    for name in ("cat/huge header.png", "dog/64 megapixels.png"):
        path = odd_folder / name
        assert path.stat().st_size < 200_000
        assert inspect_image(path).startswith("too large")
    assert 8000 * 8000 > MAX_PIXELS


@pytest.mark.integration
def test_unreadable_file_and_folder_without_read_privilege(tmp_path):
    """chmod 000 as seen by a process that honours it: the file is rejected with a reason, and a
    folder that cannot be listed stops the copy instead of silently losing its images."""
    prefix = unprivileged()
    if prefix is None:
        pytest.skip("running as root without setpriv: chmod 000 cannot stop root from reading")
    locked = tmp_path / "src" / "cat"
    locked.mkdir(parents=True)
    shutil.copyfile(CAT / "1.jpg", locked / "1.jpg")
    shutil.copyfile(CAT / "2.jpg", tmp_path / "locked.jpg")
    os.chmod(tmp_path / "locked.jpg", 0)
    os.chmod(locked, 0)
    code = (
        "import sys; from pathlib import Path\n"
        "from petprobe.data.images import inspect_image\nfrom petprobe.data.mirror import copy_tree\n"
        "from petprobe.errors import PetprobeError\n"
        f"s = Path({str(tmp_path)!r})\n"
        "print(inspect_image(s / 'locked.jpg'))\n"
        "try:\n    copy_tree(s / 'src', s / 'dst')\n    print('copied')\n"
        "except PetprobeError as e:\n    print('error:', e)\n"
    )
    try:
        result = subprocess.run([*prefix, sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                                timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        os.chmod(locked, 0o755)
        os.chmod(tmp_path / "locked.jpg", 0o644)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["unreadable (permission denied)",
                                          f"error: cannot read folder {locked}: Permission denied"]


@pytest.mark.unit
def test_non_utf8_file_name_is_left_out_by_download_and_listed_in_rejected_csv(tmp_path):
    """A Latin-1 name from an old zip (invalid UTF-8) is not copied into data/raw (a DVC output,
    whose records are UTF-8) and is listed in rejected.csv; the rest of the dataset is prepared."""
    src = tmp_path / "src"
    for cls in ("cat", "dog"):
        (src / cls).mkdir(parents=True)
        for n in (1, 2, 3):
            shutil.copyfile(PETIMAGES / cls.title() / f"{n}.jpg", src / cls / f"{n}.jpg")
    odd = os.fsencode(src / "cat") + b"/caf\xe9.jpg"
    shutil.copyfile(CAT / "4.jpg", odd)
    work = tmp_path / "work"
    work.mkdir()
    (work / "params.yaml").write_text(f"datasets: [odd]\nimagefolders: {{odd: '{src}'}}\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        download.main("odd")
        prepare.main("odd")
    for path in (work / "data/raw/odd").rglob("*"):
        path.name.encode("utf-8")  # every copied name is valid UTF-8
    rejected = pd.read_csv(work / "data/prepared/odd/rejected.csv")
    manifest = pd.read_csv(work / "data/prepared/odd/manifest.csv")
    assert len(manifest) == 6 and len(rejected) == 1
    assert rejected.path[0] == "data/raw/odd/cat/caf\\xe9.jpg" and "not valid UTF-8" in rejected.reason[0]
