"""Mutation fuzz of the image check and of predict: a few hundred damaged files of eight formats,
made from a real photo with a fixed seed. Every one is accepted or rejected with a reason; no
exception of any type escapes ``inspect_image``, the embed loader or ``Predictor.predict``.
Besides byte-level damage, issue 28's structural mutations: a scan (or block) repeated up to 2,000
times, the scan bomb's shape, and junk after the end of the file.
"""

from __future__ import annotations

import io
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import PETIMAGES, trained_logreg_repository
from hostile_files import jpeg_scans
from petprobe.data.images import MAX_JPEG_SCANS, inspect_image, load_rgb_tensor
from test_faults_hostile import strip_png

FORMATS = {  # format -> save options
    "JPEG": {}, "PNG": {}, "GIF": {}, "WEBP": {}, "TIFF": {"compression": "tiff_lzw"}, "BMP": {}, "DDS": {}, "ICO": {},
}
# Values that break size fields: zero, one, the extremes, and a strip length.
EXTREMES = [0, 1, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 40000]
CASES_PER_FORMAT = 50
SEED = 16


def seeds() -> dict[str, bytes]:
    photo = Image.open(PETIMAGES / "Cat" / "1.jpg").convert("RGB").resize((24, 16))
    out = {}
    for fmt, options in FORMATS.items():
        buf = io.BytesIO()
        (photo.convert("RGBA") if fmt == "DDS" else photo).save(buf, fmt, **options)
        out[fmt] = buf.getvalue()
    return out


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One of: random bytes (mostly in the header), an extreme 32-bit value, a truncation, a zeroed
    or reversed block."""
    d, head = bytearray(data), min(len(data), 160)
    op = rng.integers(4)
    if op == 0:
        for _ in range(rng.integers(1, 9)):
            d[rng.integers(head if rng.random() < 0.6 else len(d))] = rng.integers(256)
    elif op == 1:
        i = rng.integers(max(head - 4, 1))
        d[i:i + 4] = struct.pack("<I" if rng.random() < 0.5 else ">I", EXTREMES[rng.integers(len(EXTREMES))])
    elif op == 2:
        d = d[:rng.integers(1, len(d))]
    else:
        i = rng.integers(len(d))
        j = min(len(d), i + int(rng.integers(1, 64)))
        d[i:j] = bytes(j - i) if rng.random() < 0.5 else d[i:j][::-1]
    return bytes(d)


# Issue 28's mutations, drawn from their own generator so the cases above stay the same.
STRUCTURE_CASES_PER_FORMAT = 12
MAX_REPEATS = 2000
MAX_JUNK = 256 * 1024


def mutate_structure(data: bytes, fmt: str, rng: np.random.Generator) -> tuple[str, bytes]:
    """("repeat", ...): a scan bomb: a JPEG's last scan (another format's random block of up to
    64 bytes) repeated up to MAX_REPEATS times in place; or ("junk", ...): up to MAX_JUNK random or
    zero bytes after the end of the file."""
    if rng.random() < 0.5:
        if fmt == "JPEG":
            start, end = jpeg_scans(data)[-1]
        else:
            start = int(rng.integers(8, len(data) - 1))
            end = min(len(data), start + int(rng.integers(1, 65)))
        return "repeat", data[:end] + data[start:end] * int(rng.integers(1, MAX_REPEATS + 1)) + data[end:]
    n = int(rng.integers(1, MAX_JUNK + 1))
    junk = rng.integers(0, 256, n, dtype=np.uint8).tobytes() if rng.random() < 0.5 else bytes(n)
    return "junk", data + junk


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory) -> list[tuple[str, str]]:
    folder = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(SEED)
    files = []
    for fmt, data in seeds().items():
        for k in range(CASES_PER_FORMAT):
            path = folder / f"{fmt.lower()}-{k:03d}.{fmt.lower()}"
            path.write_bytes(mutate(data, rng))
            files.append((fmt, str(path)))
    rng = np.random.default_rng(SEED + 28)
    for fmt, data in seeds().items():
        for k in range(STRUCTURE_CASES_PER_FORMAT):
            kind, mutant = mutate_structure(data, fmt, rng)
            path = folder / f"{fmt.lower()}-{kind}-{k:03d}.{fmt.lower()}"
            path.write_bytes(mutant)
            files.append((fmt, str(path)))
    return files


@pytest.mark.unit
def test_jpeg_scan_bombs_are_refused_and_junk_after_a_jpeg_is_never_read(fuzzed):
    """Among the structure mutants of the JPEG seed: a repeated last scan is refused when it makes
    more than MAX_JPEG_SCANS scans, else decoded (a 24x16 image: cheap whatever the repeats); junk
    after the end marker changes nothing: the pixels are the seed's."""
    import torch

    clean = tmp_seed = None
    bombs = junk = 0
    for fmt, path in fuzzed:
        if fmt != "JPEG" or "-repeat-" not in path and "-junk-" not in path:
            continue
        if clean is None:
            tmp_seed = path + ".seed.jpg"
            Path(tmp_seed).write_bytes(seeds()["JPEG"])
            clean = load_rgb_tensor(tmp_seed)
        data = Path(path).read_bytes()
        if "-repeat-" in path:
            scans = len(jpeg_scans(data))
            reason = inspect_image(path)
            assert (reason is not None and reason.startswith("too many JPEG scans")) == (scans > MAX_JPEG_SCANS)
            bombs += scans > MAX_JPEG_SCANS
        else:
            assert inspect_image(path) is None and torch.equal(load_rgb_tensor(path), clean)
            junk += 1
    assert bombs >= 2 and junk >= 2


def damaged_dds() -> bytes:
    """The DDS seed with its pixel-format flags zeroed: PIL raises NotImplementedError."""
    data = bytearray(seeds()["DDS"])
    data[80:84] = bytes(4)  # DDS_PIXELFORMAT.dwFlags (4-byte magic + 76-byte header prefix)
    return bytes(data)


def damaged_tiff() -> bytes:
    """A two-page TIFF whose second page lost its ImageWidth tag: PIL raises TypeError."""
    photo = Image.open(PETIMAGES / "Cat" / "1.jpg").convert("RGB").resize((24, 16))
    buf = io.BytesIO()
    photo.save(buf, "TIFF", save_all=True, append_images=[photo])
    data = bytearray(buf.getvalue())
    width_tag = max(data.rfind(struct.pack("<HHI", 256, kind, 1)) for kind in (3, 4))  # the last page's tag 256
    data[width_tag:width_tag + 2] = struct.pack("<H", 0x9999)
    return bytes(data)


@pytest.mark.unit
def test_damaged_dds_from_the_issue_is_rejected_with_its_reason(tmp_path):
    path = tmp_path / "damaged"
    path.write_bytes(damaged_dds())
    assert inspect_image(path) == "corrupt or undecodable image (NotImplementedError: Unknown pixel format flags 0)"


@pytest.mark.unit
def test_a_tiff_whose_second_page_is_damaged_is_read_from_its_first_page(tmp_path):
    """Only the first page is ever read (issue 28: counting pages walked all 60,000 of a 6 MB TIFF),
    so the damaged second page that raised TypeError (issue 16) no longer matters: the file is usable."""
    path = tmp_path / "damaged.tif"
    path.write_bytes(damaged_tiff())
    assert inspect_image(path) is None
    assert load_rgb_tensor(path).shape == (3, 16, 24)


@pytest.mark.unit
def test_unmutated_seeds_are_usable_images(tmp_path):
    for fmt, data in seeds().items():
        (tmp_path / fmt).write_bytes(data)
        assert inspect_image(tmp_path / fmt) is None, fmt


@pytest.mark.unit
def test_decode_check_never_raises(fuzzed):
    started = time.monotonic()
    verdicts = {}
    for fmt, path in fuzzed:
        reason = inspect_image(path)  # any exception fails the test
        assert reason is None or (isinstance(reason, str) and "\n" not in reason)
        verdicts.setdefault(fmt, []).append(reason is None)
        if reason is None:  # what passes the check also loads for embed
            assert load_rgb_tensor(path).shape[0] == 3
    assert time.monotonic() - started < 60
    # Every format's mutants include rejected files, and overall many are still readable images
    # (PNG and ICO check CRCs, so nearly every mutant of theirs is refused).
    assert all(sum(kept) < len(kept) for kept in verdicts.values())
    assert sum(map(sum, verdicts.values())) > len(fuzzed) // 5


@pytest.fixture(scope="module")
def predictor(tmp_path_factory, cat_dog_embeddings):
    """A Predictor of efficientnet_lite0 + a logreg fit on real cat and dog photos."""
    from petprobe.predict import Predictor

    root = trained_logreg_repository(tmp_path_factory.mktemp("trained"), "fuzz", cat_dog_embeddings)
    return Predictor.for_dataset("fuzz", "logreg", root=root)


@pytest.mark.integration
def test_predict_reports_every_fuzzed_file_and_never_raises(fuzzed, predictor):
    paths = [path for _, path in fuzzed[::4]] + [str(PETIMAGES / "Cat" / "1.jpg")]  # a quarter: embedding costs
    results = predictor.predict(paths, top_k=1)
    assert [r.path for r in results] == paths
    assert all((r.error is None) != (not r.classes) for r in results)  # a class or an error, never both
    assert results[-1].error is None and results[-1].classes[0][0] == "Cat"
    assert sum(r.error is None for r in results) > len(results) // 10


@pytest.mark.unit
def test_predict_still_predicts_the_others_when_a_checked_file_fails_to_decode(predictor, tmp_path):
    """The check is skipped here, as if a file changed after it: decoding fails inside the embedding
    batch, and predict falls back to one file at a time instead of failing every file."""
    from petprobe.predict import Predictor

    class Unchecked(Predictor):
        @staticmethod
        def _problem(path):
            return None

    unchecked = Unchecked(predictor.backbone, predictor.head, precision_name="fp32")
    (tmp_path / "damaged.dds").write_bytes(damaged_dds())
    (tmp_path / "strip.png").write_bytes(strip_png(1, 40000))
    paths = [str(PETIMAGES / "Cat" / "1.jpg"), str(tmp_path / "damaged.dds"), str(tmp_path / "strip.png"),
             str(PETIMAGES / "Dog" / "1.jpg")]
    results = unchecked.predict(paths, top_k=1)
    assert [r.classes[0][0] for r in (results[0], results[3])] == ["Cat", "Dog"]
    assert "NotImplementedError: Unknown pixel format flags 0" in results[1].error
    assert "too large (1x40000 px" in results[2].error
