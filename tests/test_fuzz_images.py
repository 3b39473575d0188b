"""Mutation fuzz of the image check and of predict: a few hundred damaged files of eight formats,
made from a real photo with a fixed seed. Every one is accepted or rejected with a reason; no
exception of any type escapes ``inspect_image``, the embed loader or ``Predictor.predict``.
"""

from __future__ import annotations

import io
import struct
import time

import numpy as np
import pytest
from PIL import Image

from conftest import PETIMAGES
from petprobe.data.images import inspect_image, load_rgb_tensor
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
    return files


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


@pytest.mark.parametrize("make, reason", [
    (damaged_dds, "corrupt or undecodable image (NotImplementedError: Unknown pixel format flags 0)"),
    (damaged_tiff, "corrupt or undecodable image (TypeError: Missing dimensions)"),
])
def test_damaged_dds_and_tiff_from_the_issue_are_rejected_with_their_reason(make, reason, tmp_path):
    path = tmp_path / "damaged"
    path.write_bytes(make())
    assert inspect_image(path) == reason


def test_unmutated_seeds_are_usable_images(tmp_path):
    for fmt, data in seeds().items():
        (tmp_path / fmt).write_bytes(data)
        assert inspect_image(tmp_path / fmt) is None, fmt


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
    from petprobe.backbones import get_backbone
    from petprobe.heads.logreg import LogRegHead
    from petprobe.outputs import write_json
    from petprobe.predict import Predictor

    root = tmp_path_factory.mktemp("trained")
    backbone = get_backbone("efficientnet_lite0")
    write_json(root / "data/embeddings/fuzz/meta.json", {
        "backbone": backbone.name, "weights": {"sha256": backbone.weights.sha256},
        "preprocessing": backbone.preprocessing.as_dict(), "dim": backbone.dim, "precision": "fp32"})
    train = cat_dog_embeddings["train"]
    LogRegHead(cs=(0.1,)).fit(train["X"], train["labels"]).save(root / "data/models/fuzz/logreg.npz")
    return Predictor.for_dataset("fuzz", "logreg", root=root)


def test_predict_reports_every_fuzzed_file_and_never_raises(fuzzed, predictor):
    paths = [path for _, path in fuzzed[::4]] + [str(PETIMAGES / "Cat" / "1.jpg")]  # a quarter: embedding costs
    results = predictor.predict(paths, top_k=1)
    assert [r.path for r in results] == paths
    assert all((r.error is None) != (not r.classes) for r in results)  # a class or an error, never both
    assert results[-1].error is None and results[-1].classes[0][0] == "Cat"
    assert sum(r.error is None for r in results) > len(results) // 10


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
