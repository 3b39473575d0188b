"""Hostile input, round three (issue 28): decode-time bombs, paths re-checked where they are read,
memory that follows the output, tampered artefacts and params. Each finding of the issue is a
test here; every hostile file is made in the test (tests/hostile_files.py). Times are measured in
benchmarks/hostile_inputs.py, not here.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import PETIMAGES, WORKSPACE_PETIMAGES, WORKSPACE_PETS, photo_folder, trained_logreg_repository
from hostile_files import (
    jpeg_scans,
    many_page_tiff,
    png16,
    png_chunk_flood,
    progressive_jpeg,
    scan_bomb_jpeg,
    with_trailing_junk,
)
from petprobe.artefacts import Artefacts
from petprobe.data.images import (
    MAX_DECODER_READS,
    MAX_FILE_BYTES,
    MAX_JPEG_SCAN_BLOCKS,
    MAX_JPEG_SCANS,
    MAX_PIXELS,
    UnusableImage,
    inspect_image,
    load_images,
    load_rgb,
    load_rgb_tensor,
)
from petprobe.data.jpeg import jpeg_layout
from petprobe.errors import MAX_LINE, PetprobeError, error_line, one_line, shorten
from petprobe.outputs import write_json
from test_faults_hostile import run_python

GIB = 2**30


def photo_jpeg() -> bytes:
    return (PETIMAGES / "Cat" / "1.jpg").read_bytes()


# --- 1. the progressive-JPEG scan bomb -------------------------------------------------------


@pytest.mark.unit
def test_scan_blocks_of_libjpegs_own_progressive_scripts_are_counted_exactly():
    """The walk's count against a hand computation from libjpeg's documented default scripts
    (jcparam.c, jpeg_simple_progression): grey, 6 scans over the one component; colour 4:2:0,
    10 scans: luma in 6 of them (DC first, AC 1-5, AC 6-63, AC refine, DC refine, AC refine), each
    chroma component in 4."""
    grey = jpeg_layout(io.BytesIO(progressive_jpeg(4096)))
    assert (grey.scans, grey.scan_blocks) == (6, 6 * (4096 // 8) ** 2)
    colour = progressive_jpeg(1000, mode="RGB")
    layout = jpeg_layout(io.BytesIO(colour))
    luma, chroma = 125 * 125, 63 * 63  # 1000 px / 8; 500 px / 8 rounded up
    assert (layout.scans, layout.scan_blocks, layout.end) == (10, 6 * luma + 2 * 4 * chroma, len(colour))
    assert len(jpeg_scans(colour)) == 10  # the test's own, independent marker walk agrees on the scans


@pytest.mark.unit
def test_the_issues_scan_bomb_is_rejected_before_decoding(tmp_path):
    bomb = scan_bomb_jpeg()  # 4096x4096 grey, the last scan repeated 20,000 times: 726 KB
    assert 700_000 < len(bomb) < 750_000
    path = tmp_path / "bomb.jpg"
    path.write_bytes(bomb)
    assert jpeg_layout(io.BytesIO(bomb)).scans == 20_006
    reason = inspect_image(path)
    assert reason == (f"too many JPEG scans (20,006; the limit is {MAX_JPEG_SCANS}): a decode-time bomb "
                      "(progressive scans repeated)")
    for load in (load_rgb, load_rgb_tensor):  # every later reader refuses it too
        with pytest.raises(UnusableImage, match="too many JPEG scans"):
            load(path)


@pytest.mark.unit
def test_a_bomb_within_the_scan_limit_is_bounded_by_the_blocks_it_decodes(tmp_path):
    """60 repeats stay under the scan limit; 66 scans of 262,144 blocks are over the block budget.
    One repeat fewer than the budget allows is accepted and decodes (to the flat grey it is)."""
    per_scan = (4096 // 8) ** 2
    allowed_repeats = MAX_JPEG_SCAN_BLOCKS // per_scan - 6
    over, under = tmp_path / "over.jpg", tmp_path / "under.jpg"
    over.write_bytes(scan_bomb_jpeg(4096, allowed_repeats + 1))
    under.write_bytes(scan_bomb_jpeg(4096, allowed_repeats))
    assert inspect_image(over).startswith(f"too much JPEG decoding ({(allowed_repeats + 7) * per_scan:,} 8x8 blocks")
    assert inspect_image(under) is None
    pixels = load_rgb_tensor(under)
    assert pixels.shape == (3, 4096, 4096) and 127 <= int(pixels.min()) <= int(pixels.max()) <= 128


@pytest.mark.unit
@pytest.mark.workspace
def test_reference_photos_are_far_inside_the_jpeg_budget():
    """Every JPEG of both workspace datasets, as their archives encoded them (the embedded sample's
    photos were re-encoded by petprobe): at most 10 scans and 8.2 passes over its pixels, where the
    budget allows 16 passes over a MAX_PIXELS image (so it is never the budget that refuses a photo)."""
    worst, n = 0.0, 0
    for path in sorted(WORKSPACE_PETIMAGES.rglob("*.jpg")) + sorted((WORKSPACE_PETS / "images").glob("*.jpg")):
        data = path.read_bytes()
        if data[:3] != b"\xff\xd8\xff":
            continue
        layout = jpeg_layout(io.BytesIO(data))
        with Image.open(io.BytesIO(data)) as im:
            worst = max(worst, layout.scan_blocks / (im.width * im.height / 64))
        assert layout.scans <= 10, path
        n += 1
    assert n > 2000 and worst < 9 and MAX_JPEG_SCAN_BLOCKS == 16 * MAX_PIXELS // 64


@pytest.mark.integration
def test_a_flood_of_empty_png_chunks_is_cut_at_the_read_budget_and_real_images_are_far_below_it(tmp_path):
    """The same kind of bomb in another format: PIL parses PNG chunks in Python, two reads each.
    65,000 empty chunks (130,000 reads) are decoded; 70,000 (140,000) are refused. A 22 MB PNG of
    noise takes about a thousand reads."""
    under, over, noise = tmp_path / "under.png", tmp_path / "over.png", tmp_path / "noise.png"
    under.write_bytes(png_chunk_flood(65_000))
    over.write_bytes(png_chunk_flood(70_000))
    Image.effect_noise((3000, 3000), 64).convert("RGB").save(noise)
    assert inspect_image(under) is None and load_rgb_tensor(under).shape == (3, 64, 64)
    assert inspect_image(over) == (f"over {MAX_DECODER_READS:,} reads to decode: a decode-time bomb (a flood of "
                                   "empty chunks or blocks)")
    with pytest.raises(UnusableImage, match="reads to decode"):
        load_rgb(over)
    assert inspect_image(noise) is None


# --- 3. memory far above the pixel count ---------------------------------------------------


@pytest.mark.unit
def test_16_bit_conversion_equals_the_float_formula_for_every_value():
    """The integer rounding ``(v + 128) // 257`` against the float formula it replaces, on all
    65,536 values, through a real 16-bit PNG (256 x 256 = every value once)."""
    from petprobe.data.images import _to_8bit

    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    buf = io.BytesIO()
    Image.fromarray(values).save(buf, "PNG")  # uint16: mode I;16
    with Image.open(buf) as im:
        im.load()
        got = np.asarray(_to_8bit(im))
    expected = np.clip(values.astype(np.float64) / 65535.0 * 255.0 + 0.5, 0, 255).astype(np.uint8)
    assert np.array_equal(got, expected)


@pytest.mark.unit
@pytest.mark.parametrize("mode, high", [("F", 1000.0), ("F", 200.0), ("I", 40000)])
def test_32_bit_images_convert_band_by_band_exactly_as_whole(mode, high):
    from petprobe.data.images import _BAND_ROWS, _to_8bit

    rng = np.random.default_rng(28)
    values = (rng.random((_BAND_ROWS * 2 + 37, 50)) * high).astype(np.float32 if mode == "F" else np.int32)
    im = Image.fromarray(values)
    assert im.mode == mode
    full = 65535.0 if values.max() > 255 else 255.0
    expected = np.clip(values.astype(np.float64) / full * 255.0 + 0.5, 0, 255).astype(np.uint8)
    assert np.array_equal(np.asarray(_to_8bit(im)), expected)


@pytest.mark.integration
def test_the_16_bit_7071_png_is_checked_and_loaded_in_bounded_memory(tmp_path):
    path = tmp_path / "gray16.png"
    path.write_bytes(png16(7071))
    assert path.stat().st_size < 120_000
    result, peak_kib = run_python(f"""
        from petprobe.data.images import inspect_image, load_rgb
        print(inspect_image({str(path)!r}), load_rgb({str(path)!r}).getpixel((7000, 7000)))
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "(128,", "128,", "128)"]  # 0x8000 / 257 = 127.5 -> 128
    print(f"peak RSS, check + load of the 16-bit 7071x7071 PNG: {peak_kib / 2**20:.2f} GiB")
    assert peak_kib < GIB / 1024  # it was 1.4 GB for the check alone


@pytest.mark.integration
def test_trailing_junk_is_never_read_and_a_file_over_the_limit_is_refused(tmp_path):
    """A photo + 300 MiB of junk after its end marker (sparse: no disk) is the photo, loaded
    without reading the junk; + 1 GiB is over MAX_FILE_BYTES and refused before it is opened by a decoder."""
    small = with_trailing_junk(tmp_path / "junk300.jpg", photo_jpeg(), 300 * 2**20)
    big = with_trailing_junk(tmp_path / "junk1g.jpg", photo_jpeg(), GIB)
    assert inspect_image(big) == f"file too large ({big.stat().st_size:,} bytes; the limit is {MAX_FILE_BYTES:,})"
    result, peak_kib = run_python(f"""
        import torch
        from petprobe.data.images import inspect_image, load_rgb_tensor
        clean = load_rgb_tensor({str(PETIMAGES / "Cat" / "1.jpg")!r})
        print(inspect_image({str(small)!r}), torch.equal(load_rgb_tensor({str(small)!r}), clean))
    """, tmp_path)
    assert result.stdout.split() == ["None", "True"], result.stderr
    print(f"peak RSS with a 300 MiB tail: {peak_kib / 2**20:.2f} GiB")
    assert peak_kib < GIB / 1024  # the whole file was read: 2.8 GB


# --- 4. multi-page TIFF ---------------------------------------------------------------------


@pytest.mark.unit
def test_a_tiff_of_60000_pages_is_read_from_its_first_page(tmp_path):
    """Accepted, with bounded cost: only the first page is ever opened (the page count is never
    asked for; tests/test_fuzz_images.py shows a damaged second page is never read)."""
    path = tmp_path / "pages.tif"
    path.write_bytes(many_page_tiff(60_000))
    assert 6_000_000 < path.stat().st_size < 7_000_000
    assert inspect_image(path) is None
    assert load_rgb_tensor(path).tolist() == [[[128]], [[128]], [[128]]]


# --- 2. manifest paths, re-checked where they are read -----------------------------------------


@pytest.fixture
def raw_repo(tmp_path, monkeypatch):
    """A working folder whose data/raw/tiny holds two photos, a link inside, a link out, a FIFO."""
    monkeypatch.chdir(tmp_path)
    raw = tmp_path / "data/raw/tiny/Cat"
    raw.mkdir(parents=True)
    for n in (1, 2):
        shutil.copyfile(PETIMAGES / "Cat" / f"{n}.jpg", raw / f"{n}.jpg")
    outside = tmp_path / "outside.jpg"
    shutil.copyfile(PETIMAGES / "Dog" / "1.jpg", outside)
    (raw / "inside.jpg").symlink_to(raw / "1.jpg")
    (raw / "out.jpg").symlink_to(outside)
    os.mkfifo(raw / "pipe.jpg")
    return Path("data/raw/tiny/Cat")


@pytest.mark.unit
def test_every_reader_refuses_a_link_out_of_the_raw_folder(raw_repo):
    import torch

    from petprobe.probing.measures import read_trimap

    out = raw_repo / "out.jpg"
    assert inspect_image(out).startswith("resolves outside data/raw/tiny/ (to ")
    for read in (load_rgb, load_rgb_tensor):  # evaluate, explain, render (load_rgb); embed, predict (tensor)
        with pytest.raises(UnusableImage, match="resolves outside data/raw/tiny/"):
            read(out)
    with pytest.raises(PetprobeError, match="cannot read an image .*resolves outside"):
        load_images([out], lambda im: torch.zeros(1))  # render
    with pytest.raises(PetprobeError, match="not a readable trimap PNG .*resolves outside"):
        read_trimap(out)  # explain's trimaps
    for path in (raw_repo / "1.jpg", raw_repo / "inside.jpg", raw_repo / "../Cat/2.jpg"):  # links inside are fine
        assert inspect_image(path) is None and load_rgb_tensor(path).shape[0] == 3
    escaped = Path("data/raw/tiny/../../../outside.jpg")
    assert inspect_image(escaped).startswith("resolves outside data/raw/tiny/")
    assert inspect_image(raw_repo / "pipe.jpg") == "not a regular file (FIFO, socket or device)"  # without blocking


@pytest.mark.unit
def test_links_into_dvcs_cache_are_read(tmp_path, monkeypatch):
    """With DVC's `cache.type: symlink` every raw file is a link into .dvc/cache."""
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / ".dvc/cache/files/md5/ab"
    cache.mkdir(parents=True)
    shutil.copyfile(PETIMAGES / "Cat" / "1.jpg", cache / "cdef")
    (tmp_path / "data/raw/tiny/Cat").mkdir(parents=True)
    (tmp_path / "data/raw/tiny/Cat/1.jpg").symlink_to(cache / "cdef")
    assert inspect_image("data/raw/tiny/Cat/1.jpg") is None


@pytest.mark.unit
@pytest.mark.parametrize("row", ["/dev/zero", "/etc/hostname", "data/raw/tiny/../../../etc/hostname",
                                 "data/raw/other/Cat/1.jpg", "data/rawx/tiny/1.jpg", "Cat/1.jpg"])
def test_a_manifest_row_outside_the_raw_folder_is_one_line(tmp_path, monkeypatch, row):
    monkeypatch.chdir(tmp_path)
    artefacts = Artefacts("tiny")
    artefacts.prepared.mkdir(parents=True)
    artefacts.manifest_csv.write_text(f"path,label,split\ndata/raw/tiny/Cat/1.jpg,Cat,train\n{row},Cat,train\n")
    artefacts.classes_json.write_text('["Cat"]')
    with pytest.raises(PetprobeError) as err:
        artefacts.read_manifest()
    assert str(err.value) == (f"data/prepared/tiny/manifest.csv lists {row!r}, which is not a file under "
                              "data/raw/tiny/ (the only folder a manifest may name); rerun the prepare stage (dvc repro)")


@pytest.mark.integration
def test_embed_with_dev_zero_in_the_manifest_exits_with_one_line_in_bounded_memory(tmp_path, monkeypatch):
    monkeypatch.setenv("PETPROBE_PROGRESS", "off")
    photos = photo_folder(tmp_path / "photos", per_class=3)
    work = tmp_path / "work"
    work.mkdir()
    (work / "params.yaml").write_text(f"datasets: [tiny]\nimagefolders: {{tiny: '{photos}'}}\n"
                                      "embed: {num_workers: 0, precision: fp32}\n")
    result, _ = run_python("from stages import download, prepare\ndownload.main('tiny'); prepare.main('tiny')", work)
    assert result.returncode == 0, result.stderr
    manifest = work / "data/prepared/tiny/manifest.csv"
    rows = manifest.read_text().splitlines()
    for hostile in ("/dev/zero", "data/raw/tiny/Cat/zero.jpg"):  # a row, and a link planted in the raw folder
        manifest.write_text("\n".join([rows[0], rows[1].replace(rows[1].split(",")[0], hostile), *rows[2:]]) + "\n")
        if hostile.endswith("zero.jpg"):
            (work / hostile).symlink_to("/dev/zero")
        result, peak_kib = run_python("""
            import sys
            from petprobe.errors import run_stage
            from stages import embed
            sys.argv = ["embed", "tiny"]
            run_stage(embed.main)
        """, work)
        assert result.returncode == 2 and result.stderr.count("\n") == 0, result.stderr[-3000:]
        assert result.stderr.startswith("petprobe: error: ")
        assert ("which is not a file under data/raw/tiny/" in result.stderr if hostile == "/dev/zero"
                else "resolves outside data/raw/tiny/ (to /dev/zero); not read" in result.stderr)
        print(f"embed with {hostile}: peak RSS {peak_kib / 2**20:.2f} GiB")
        assert peak_kib < GIB / 1024  # it grew to 22 GB
        assert not (work / "data/embeddings/tiny").exists()


# --- predict on every hostile file --------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cat_dog_embeddings):
    """A repository with efficientnet_lite0's meta.json and a logreg fit on real photos."""
    root = trained_logreg_repository(tmp_path_factory.mktemp("trained"), "tiny", cat_dog_embeddings)
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "params.yaml").write_text("datasets: [tiny]\n")
    return root


@pytest.mark.integration
def test_predict_on_the_hostile_files_gives_one_line_each_in_bounded_memory(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("PETPROBE_PROGRESS", "off")
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "bomb.jpg").write_bytes(scan_bomb_jpeg())
    (folder / "pages.tif").write_bytes(many_page_tiff(60_000))
    (folder / "gray16.png").write_bytes(png16(7071))
    with_trailing_junk(folder / "junk.jpg", photo_jpeg(), GIB)
    shutil.copyfile(PETIMAGES / "Dog" / "1.jpg", folder / "dog.jpg")
    result, peak_kib = run_python(f"""
        import sys
        from petprobe.cli import main
        sys.exit(main(["predict", {str(folder)!r}, "--dataset", "tiny", "--model", "logreg", "--repo", {str(trained)!r}]))
    """, tmp_path)
    assert result.returncode == 1
    errors = dict(line.removeprefix("petprobe: error: ").split(": ", 1) for line in result.stderr.splitlines())
    assert errors == {str(folder / "bomb.jpg"): inspect_image(folder / "bomb.jpg"),
                      str(folder / "junk.jpg"): inspect_image(folder / "junk.jpg")}
    predicted = {line.split(": ")[0] for line in result.stdout.splitlines()}
    assert predicted == {str(folder / n) for n in ("dog.jpg", "gray16.png", "pages.tif")}
    # The baseline: the same command on the one normal photo. Importing CUDA torch and the backbone
    # maps about 0.9 GiB of shared libraries and weights; what the hostile files may add is bounded.
    baseline_folder = tmp_path / "photo"
    baseline_folder.mkdir()
    shutil.copyfile(PETIMAGES / "Dog" / "1.jpg", baseline_folder / "dog.jpg")
    baseline, baseline_kib = run_python(f"""
        import sys
        from petprobe.cli import main
        sys.exit(main(["predict", {str(baseline_folder)!r}, "--dataset", "tiny", "--model", "logreg", "--repo", {str(trained)!r}]))
    """, tmp_path)
    assert baseline.returncode == 0, baseline.stderr
    print(f"predict peak RSS: hostile files {peak_kib / 2**20:.2f} GiB, one normal photo {baseline_kib / 2**20:.2f} GiB")
    assert peak_kib - baseline_kib < 0.25 * GIB / 1024  # the 16-bit 50 MP PNG added 0.5 GiB before it was decoded in place


# --- 5. class names are plain text in figures ------------------------------------------------------


@pytest.mark.unit
def test_class_names_with_dollars_are_drawn_as_plain_text(tmp_path, monkeypatch):
    from petprobe.reporting.figures import class_samples_grid, misclassified_grid, save_figure

    monkeypatch.chdir(tmp_path)
    names = ["$\\foo$", "Dog $x^2$"]
    paths = [str(PETIMAGES / "Cat" / "1.jpg"), str(PETIMAGES / "Dog" / "1.jpg")]
    save_figure(class_samples_grid(paths, names, names, per_class=1, title="samples of $\\foo$"), "data/a.png")
    save_figure(misclassified_grid(paths, names, np.array([[0.1, 0.9], [0.8, 0.2]]), names, limit=2,
                                   title="$\\frac{"), "data/b.png")
    for name in ("a.png", "b.png"):
        with Image.open(tmp_path / "data" / name) as im:
            assert im.size[0] >= 600


# --- 6, 9. params: integer bounds, depth and size ---------------------------------------------------


@pytest.mark.unit
def test_every_integer_param_has_both_bounds_and_seeds_fit_32_bits():
    import dataclasses
    import typing

    from petprobe.params import SEED_MAX, Params, parse_params

    for section in dataclasses.fields(Params):
        cls = typing.get_type_hints(Params)[section.name]
        if not dataclasses.is_dataclass(cls):
            continue
        for f in dataclasses.fields(cls):
            if typing.get_type_hints(cls)[f.name] is int:
                key = f"{section.name}.{f.name}"
                assert "le" in f.metadata and ("ge" in f.metadata or "gt" in f.metadata), key
                if f.name == "seed":
                    assert f.metadata["le"] == SEED_MAX == 2**32 - 1
                    with pytest.raises(PetprobeError, match=f"'{key}' is 4294967296; it must be <= 4294967295"):
                        parse_params({section.name: {"seed": 2**32}})
                    # the legacy generator that raised "Seed must be between 0 and 2**32 - 1" takes the largest
                    np.random.RandomState(getattr(parse_params({section.name: {"seed": SEED_MAX}}), section.name).seed)


@pytest.mark.parametrize("text, match", [
    ("datasets: " + "[" * 20_000 + "]" * 20_000 + "\n", "nests too deeply to be a petprobe params file"),
    ("datasets: " + "[" * 40 + "]" * 40 + "\n", "nests too deeply to be a petprobe params file"),
    ("datasets:\n" + "- " * 40 + "x\n", "nests deeper than 32 levels or holds more than 100,000 values"),
    ("backbone: [&a [x, x, x, x, x, x, x, x, x], " + ", ".join(f"&{c} [{', '.join(['*' + p] * 9)}]"
                                                               for p, c in zip("abcdefg", "bcdefgh")) + "]\n",
     "nests deeper than 32 levels or holds more than 100,000 values \\(counting each use of a YAML alias\\)"),
    ("backbone: " + "x" * (1 << 20) + "\n", "params.yaml is 1,048,587 bytes, over the 1,048,576-byte limit"),
])
@pytest.mark.integration
def test_hostile_params_shapes_are_one_short_line(tmp_path, text, match):
    (tmp_path / "params.yaml").write_text(text)
    result, peak_kib = run_python("""
        import sys
        from petprobe.errors import run_stage
        from stages import prepare
        sys.argv = ["prepare", "pets"]
        run_stage(prepare.main)
    """, tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 0, result.stderr[-2000:]
    assert len(result.stderr) < MAX_LINE + 40
    import re
    assert re.search(match, result.stderr), result.stderr
    assert peak_kib < 300 * 1024  # the alias bomb took 1.2 GB


@pytest.mark.unit
def test_a_long_value_is_quoted_short():
    from petprobe.params import parse_params

    with pytest.raises(PetprobeError) as err:
        parse_params({"backbone": ["y" * 10_000] * 10_000})
    assert len(str(err.value)) < 300 and "..." in str(err.value)


# --- 7. the mirror copy does not follow a link swapped in after the listing ----------------------


@pytest.mark.unit
@pytest.mark.parametrize("swap", ["file to link", "folder to link", "file to fifo"])
def test_mirror_copy_skips_a_file_swapped_after_it_was_listed(tmp_path, monkeypatch, swap):
    import petprobe.data.mirror as mirror

    src, dst, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "secret"
    photo_folder(src, per_class=2)
    (src / "Cat/sub").mkdir()
    shutil.copyfile(PETIMAGES / "Cat" / "3.jpg", src / "Cat/sub/zz.jpg")
    outside.mkdir()
    (outside / "zz.jpg").write_bytes(b"outside file")
    listed = mirror.progress_bar

    def swap_then_copy(files, **kwargs):  # runs after the listing, before the first file is copied
        if swap == "file to link":
            (src / "Cat/sub/zz.jpg").unlink()
            (src / "Cat/sub/zz.jpg").symlink_to(outside / "zz.jpg")
        elif swap == "folder to link":
            shutil.rmtree(src / "Cat/sub")
            (src / "Cat/sub").symlink_to(outside)
        else:
            (src / "Cat/sub/zz.jpg").unlink()
            os.mkfifo(src / "Cat/sub/zz.jpg")
        return listed(files, **kwargs)

    monkeypatch.setattr(mirror, "progress_bar", swap_then_copy)
    n, skipped = mirror.copy_tree(src, dst)
    assert n == 4
    assert sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*") if not p.is_dir()) == [
        "Cat/1.jpg", "Cat/2.jpg", "Dog/1.jpg", "Dog/2.jpg"]
    assert not any(p.is_symlink() for p in dst.rglob("*"))
    reason = "not a regular file (FIFO, socket or device)" if swap == "file to fifo" else "symbolic link (not followed)"
    assert skipped == [{"path": "Cat/sub/zz.jpg", "reason": reason}]


# --- 8. tampered artefacts ---------------------------------------------------------------------


def npy_with_header(shape, payload: bytes = b"\0" * 64) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue() + payload


@pytest.mark.unit
def test_an_embeddings_file_claiming_a_huge_shape_is_refused_from_its_header(tmp_path, monkeypatch):
    from petprobe.checksums import image_list_sha256

    monkeypatch.chdir(tmp_path)
    artefacts = Artefacts("tiny")
    manifest = pd.DataFrame({"path": ["data/raw/tiny/Cat/1.jpg"] * 2, "label": ["Cat"] * 2, "split": ["test"] * 2})
    write_json(artefacts.embeddings_meta, {"dim": 8, "splits": {"test": {
        "n": 2, "image_list_sha256": image_list_sha256(manifest.path, manifest.label)}}})
    for shape, match in (((10**9, 1280), r"unreadable or truncated \(its header claims shape \(1000000000, 1280\) "
                                         r"float32 \(5,120,000,000,000 bytes\) but 8 bytes follow\)"),
                         ((2, 1), r"has shape \(2, 1\) float32, expected \(2, 8\) float32")):
        artefacts.split_npy("test").write_bytes(npy_with_header(shape, b"\0" * 8))
        with pytest.raises(PetprobeError, match=match):
            artefacts.read_split(manifest, "test")


@pytest.mark.unit
def test_a_logreg_file_with_a_huge_member_header_is_one_line(trained, tmp_path):
    from petprobe.heads.logreg import LogRegHead

    good = trained / "data/models/tiny/logreg.npz"
    evil = tmp_path / "logreg.npz"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(evil, "w") as out:
        for info in src.infolist():
            data = src.read(info)
            out.writestr(info.filename, npy_with_header((2, 10**9)) if info.filename == "coef.npy" else data)
    with pytest.raises(PetprobeError, match=r"not a valid logistic-regression file \(its header claims shape "
                                            r"\(2, 1000000000\) float32 \(8,000,000,000 bytes\) but 64 bytes follow\)"):
        LogRegHead.load(evil)
    bare = tmp_path / "bare.npz"
    bare.write_bytes(npy_with_header((10**9, 10**4)))
    with pytest.raises(PetprobeError, match=r"not a valid logistic-regression file \(not an .npz archive\)"):
        LogRegHead.load(bare)


@pytest.fixture(scope="module")
def torch_head_file(tmp_path_factory, cat_dog_embeddings) -> Path:
    from petprobe.heads.torch_head import TorchHead

    train, val = cat_dog_embeddings["train"], cat_dog_embeddings["val"]
    path = tmp_path_factory.mktemp("head") / "head.pt"
    TorchHead(hidden=16, max_epochs=2, patience=1).fit(train["X"], train["labels"], val["X"], val["labels"]).save(path)
    return path


@pytest.mark.integration
@pytest.mark.parametrize("change, match", [
    ({"params": {"dropout": float("nan")}}, r"is not a valid torch-head config \(dropout nan is not in \[0, 1\)\)"),
    ({"n_features_in": 10**9}, r"\(1000000000 is not an integer in \[1, 1048576\]\)"),
    ({"params": {"hidden": 400_000}}, r"\(400000 is not an integer in \[0, 65536\]\)"),
    ({"classes": [f"c{i}" for i in range(10**6)]}, r"is not a state_dict matching head.json .*size mismatch"),
    ({"n_features_in": 1 << 20}, r"is not a state_dict matching head.json .*size mismatch"),
    ({"params": {"hidden": 65536}}, r"is not a state_dict matching head.json .*size mismatch"),
])
def test_tampered_head_json_is_one_line_before_any_large_allocation(torch_head_file, tmp_path, change, match):
    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copyfile(torch_head_file, folder / "head.pt")
    config = json.loads(torch_head_file.with_suffix(".json").read_text())
    for key, value in change.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    (folder / "head.json").write_text(json.dumps(config))
    result, peak_kib = run_python(f"""
        from petprobe.errors import PetprobeError
        from petprobe.heads.torch_head import TorchHead
        try:
            TorchHead.load({str(folder / "head.pt")!r})
        except PetprobeError as err:
            print(err)
    """, tmp_path)
    import re
    assert re.search(match, result.stdout), result.stdout + result.stderr[-2000:]
    assert result.stdout.count("\n") == 1 and not result.stderr
    assert peak_kib < GIB / 1024  # 8.7, 5.0 and 2.9 GB before the one line


@pytest.mark.unit
@pytest.mark.parametrize("entry", ["abc", {"bytes": "12", "sha256": "0" * 64}, {"bytes": 12, "sha256": 5},
                                   {"bytes": 12, "sha256": "xyz"}, {"sha256": "0" * 64}, [1, 2]])
def test_malformed_download_pins_are_one_line(tmp_path, entry):
    from petprobe.data.archives import fetch_archive
    from petprobe.data.datasets import Archive

    (tmp_path / "pinned.json").write_text(json.dumps({"images.tar.gz": entry}))
    with pytest.raises(PetprobeError, match=r"pinned.json: the entry for 'images.tar.gz' is not \{bytes: <size>, "
                                            r"sha256: <64 hex digits>, ...\}; restore or delete it"):
        fetch_archive(Archive("http://127.0.0.1:9/images.tar.gz", "images.tar.gz"), tmp_path)


# --- 10. small ones ---------------------------------------------------------------------------


@pytest.mark.unit
def test_file_names_cannot_forge_predict_output_lines(trained, tmp_path, capsys, monkeypatch):
    from petprobe.cli import main

    monkeypatch.setenv("PETPROBE_PROGRESS", "off")
    folder = tmp_path / "in"
    folder.mkdir()
    forged = folder / "a\nforged.jpg: Cat 1.000.jpg"
    shutil.copyfile(PETIMAGES / "Dog" / "1.jpg", forged)
    (folder / "b\x1b[2J.jpg").write_bytes(b"not an image")
    code = main(["predict", str(folder), "--dataset", "tiny", "--model", "logreg", "--repo", str(trained)])
    out, err = capsys.readouterr()
    assert code == 1
    assert out.count("\n") == 1 and out.startswith(f"{folder}/a\\nforged.jpg: Cat 1.000.jpg: Dog ")
    assert err.count("\n") == 1 and err.startswith(f"petprobe: error: {folder}/b\\x1b[2J.jpg: not an image")


@pytest.mark.unit
def test_decoder_messages_go_into_the_reason_not_onto_stderr(tmp_path, capfd):
    photo = Image.open(PETIMAGES / "Cat" / "1.jpg").convert("RGB").resize((48, 32))
    buf = io.BytesIO()
    photo.save(buf, "JPEG")
    jpeg = buf.getvalue()
    (tmp_path / "extra.jpg").write_bytes(jpeg[:-2] + b"\x12\x34" * 10 + jpeg[-2:])  # libjpeg: extraneous bytes
    buf = io.BytesIO()
    photo.save(buf, "TIFF", compression="tiff_lzw")
    lzw = bytearray(buf.getvalue())
    lzw[18:26] = b"\xff" * 8  # damaged LZW data: libtiff prints "Using code not yet in table"
    (tmp_path / "lzw.tif").write_bytes(bytes(lzw))
    capfd.readouterr()
    assert inspect_image(tmp_path / "extra.jpg") is None
    assert load_rgb_tensor(tmp_path / "extra.jpg").shape == (3, 32, 48)
    reason = inspect_image(tmp_path / "lzw.tif")
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert reason.startswith("corrupt or truncated image (decoder error -2); the decoder said: ")
    assert "Using code not yet in table" in reason


@pytest.mark.integration
def test_published_folders_get_the_usual_mode_whatever_their_writer_did(tmp_path, monkeypatch):
    from petprobe.reporting.curves import write_curves

    monkeypatch.chdir(tmp_path)
    history = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "train_accuracy": 0.5, "val_accuracy": 0.5}
               for e in (1, 2)]
    write_curves(Path("metrics/tiny/train_head"), history, 2, title="t")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat("metrics/tiny/train_head").st_mode) == 0o777 & ~umask  # it was 0700


@pytest.mark.unit
def test_error_lines_are_capped_at_a_word_boundary():
    text = " ".join(["word"] * 1000)
    short = shorten(text, 200)
    assert len(short) <= 200 and short.endswith("word…") and short[:-1] == text[:len(short) - 1]
    assert shorten("x" * 500, 100) == "x" * 99 + "…"  # no boundary near: the long word is cut
    assert shorten("short", 100) == "short"
    line = error_line(PetprobeError("a\nb " + "z " * 50_000_000))
    assert line.startswith("petprobe: error: a b z z") and len(line) <= len("petprobe: error: ") + MAX_LINE
    assert one_line(ValueError("")) == "ValueError"


@pytest.mark.unit
def test_a_too_long_tar_member_name_is_skipped_and_recorded_not_called_damage(tmp_path):
    from petprobe.data.unpack import extract

    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        for name in ("ok/1.jpg", "ok/" + "n" * 300 + ".jpg"):
            info = tarfile.TarInfo(name)
            data = b"pixels"
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    skipped: list[dict] = []
    assert extract(archive, tmp_path / "out", skipped=skipped) == 1
    assert (tmp_path / "out/ok/1.jpg").read_bytes() == b"pixels"
    assert skipped == [{"path": "ok/" + "n" * 300 + ".jpg",
                        "reason": "file name too long for this file system (over 255 bytes a name or 4096 a path)"}]
