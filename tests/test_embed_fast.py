"""The embed fast path gives the same images and embeddings as the plain PIL path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2.functional import pil_to_tensor

from conftest import PETIMAGES, PETS
from petprobe.backbones import get_backbone
from petprobe.data.images import load_rgb, load_rgb_tensor
from petprobe.device import resolve_precision
from petprobe.embedding.embed import embed_images
from petprobe.errors import PetprobeError

CMYK_JPEG = PETIMAGES / "Cat" / "10125.jpg"
GRAY_JPEG = PETIMAGES / "Dog" / "10158.jpg"
PNG_NAMED_JPG = PETS / "images" / "Abyssinian_5.jpg"
GIF_NAMED_JPG = PETS / "images" / "Abyssinian_34.jpg"
CPU = torch.device("cpu")
FP32 = resolve_precision("fp32", CPU)


@pytest.fixture(scope="module")
def odd_jpegs(tmp_path_factory, cat_dog_images) -> list:
    """A real photo saved with each EXIF orientation, and as a progressive JPEG."""
    folder = tmp_path_factory.mktemp("jpegs")
    photo = Image.open(cat_dog_images[0])
    paths = []
    for orientation in range(1, 9):
        exif = photo.getexif()
        exif[0x0112] = orientation
        photo.save(folder / f"exif{orientation}.jpg", exif=exif, quality=90)
        paths.append(folder / f"exif{orientation}.jpg")
    photo.save(folder / "progressive.jpg", progressive=True, quality=90)
    return paths + [folder / "progressive.jpg"]


@pytest.mark.unit
@pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")  # torchvision 0.29, see images.py
def test_fast_decode_gives_exactly_the_pixels_of_load_rgb(cat_dog_images, odd_jpegs):
    jpegs = [*cat_dog_images, CMYK_JPEG, GRAY_JPEG, *odd_jpegs]
    for path in jpegs:
        # decoded by torchvision itself, not by the PIL fallback
        decode_jpeg(torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8), mode=ImageReadMode.RGB)
    for path in [*jpegs, PNG_NAMED_JPG, GIF_NAMED_JPG]:
        fast = load_rgb_tensor(path)
        assert fast.dtype == torch.uint8 and fast.shape[0] == 3
        assert torch.equal(fast, pil_to_tensor(load_rgb(path))), path.name
    rotated = load_rgb_tensor(odd_jpegs[5])  # orientation 6: rotated 90 degrees
    assert rotated.shape[1:] == load_rgb_tensor(odd_jpegs[0]).shape[1:][::-1]


@pytest.mark.unit
@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenet_v2"])  # bicubic and bilinear
def test_uint8_crop_then_batch_normalize_equals_transforms(name, cat_dog_images):
    preprocessing = get_backbone(name).preprocessing
    reference = torch.stack([preprocessing.transforms()(load_rgb(p)) for p in cat_dog_images])
    crops = torch.stack([preprocessing.crop_uint8(load_rgb_tensor(p)) for p in cat_dog_images])
    assert crops.dtype == torch.uint8 and crops.shape == (len(cat_dog_images), 3, 224, 224)
    assert torch.equal(preprocessing.normalize(crops), reference)


@pytest.mark.integration
def test_embed_images_matches_a_plain_forward_pass_and_keeps_order(cat_dog_images):
    backbone = get_backbone("mobilenet_v2")
    model = backbone.build()
    paths = [str(p) for p in cat_dog_images + [CMYK_JPEG, PNG_NAMED_JPG, GIF_NAMED_JPG]]
    blocks = list(embed_images(model, backbone.preprocessing, paths, batch_size=4, num_workers=0, device=CPU,
                               precision=FP32, progress=False))
    assert [len(b) for b in blocks] == [4, 4, 3]
    rows = np.concatenate(blocks)
    with torch.inference_mode():
        reference = model(torch.stack([backbone.transforms()(load_rgb(p)) for p in paths])).numpy()
    assert rows.dtype == np.float32 and rows.shape == (len(paths), 1280)
    np.testing.assert_allclose(rows, reference, rtol=1e-4, atol=1e-4)  # channels_last vs NCHW kernels

    with_workers = np.concatenate(list(embed_images(model, backbone.preprocessing, paths, batch_size=4,
                                                    num_workers=2, device=CPU, precision=FP32, progress=False)))
    assert np.array_equal(with_workers, rows)


@pytest.mark.unit
@pytest.mark.parametrize("num_workers", [0, 1])
def test_unreadable_image_is_one_line_naming_the_file(tmp_path, cat_dog_images, num_workers):
    backbone = get_backbone("mobilenet_v2")
    missing = tmp_path / "gone.jpg"
    paths = [str(cat_dog_images[0]), str(missing)]
    with pytest.raises(PetprobeError) as err:
        list(embed_images(backbone.build(), backbone.preprocessing, paths, batch_size=2, num_workers=num_workers,
                          device=CPU, precision=FP32, progress=False))
    assert "\n" not in str(err.value) and str(missing) in str(err.value) and "rerun prepare" in str(err.value)


@pytest.mark.unit
@pytest.mark.parametrize("mode", ["L", "LA", "P", "P+tRNS", "RGBA", "I;16", "I", "F", "1", "CMYK"])
def test_every_pil_mode_gives_the_same_pixels_as_a_tensor_and_as_rgb(tmp_path, mode):
    """The tensor path (grey repeated without PIL's RGB copy) against PIL's own convert("RGB") of the
    8-bit image: for 8-bit modes PIL's conversion is the reference, for deeper ones ``_to_8bit``
    (checked against the float formula in tests/test_faults_decode.py)."""
    from petprobe.data.images import _to_8bit

    rng = np.random.default_rng(0)
    photo = Image.open(GRAY_JPEG).convert("RGB").resize((61, 47))
    if mode in ("I;16", "I", "F"):
        values = rng.integers(0, 65536 if mode != "F" else 300, size=(47, 61))
        image = Image.fromarray(values.astype({"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]))
        image = image if image.mode == mode else image.convert(mode)
        reference = _to_8bit(image).convert("RGB")
    else:
        image = photo.convert(mode.removesuffix("+tRNS")) if mode not in ("LA", "RGBA") else photo.convert("RGBA")
        if mode in ("LA", "RGBA"):
            image.putalpha(Image.fromarray(rng.integers(0, 256, size=(47, 61)).astype(np.uint8)))
            image = image.convert(mode)
        if mode == "P+tRNS":
            image.info["transparency"] = int(np.asarray(image)[0, 0])  # one palette entry transparent
        if image.mode in ("LA", "RGBA") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            reference = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
        else:
            reference = image.convert("RGB")
    path = tmp_path / ("image.tif" if mode in ("I", "F", "CMYK") else "image.png")
    image.save(path)
    assert Image.open(path).mode == image.mode and ("transparency" in Image.open(path).info) == (mode == "P+tRNS")
    tensor = load_rgb_tensor(path)
    assert tensor.dtype == torch.uint8 and tensor.shape == (3, 47, 61)
    assert torch.equal(tensor, pil_to_tensor(reference))
    assert torch.equal(tensor, pil_to_tensor(load_rgb(path)))
