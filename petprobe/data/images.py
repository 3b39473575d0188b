"""Opening images the way real datasets need: check them fully, load any readable one as RGB.

``inspect_image`` decodes every pixel (a truncated JPEG often opens fine and fails only at the
end) and returns why a file cannot be used, or None. ``load_rgb`` turns every accepted file
(CMYK, grayscale, palette, 16-bit, RGBA, animated GIF, EXIF-rotated, a PNG named .jpg) into an
upright 8-bit RGB image. ``load_rgb_tensor`` gives the same pixels as a uint8 tensor, decoding
JPEGs with torchvision.io (libjpeg-turbo, no PIL round trip) and anything else through ``load_rgb``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from petprobe.errors import PetprobeError, one_line

__all__ = ["MAX_PIXELS", "inspect_image", "load_rgb", "load_rgb_tensor", "load_images"]

# Larger than any photo in the reference datasets by two orders of magnitude, small enough that a
# decompression bomb (a tiny file that claims gigapixels) is refused before it is decoded.
MAX_PIXELS = 50_000_000


def inspect_image(path: str | Path) -> str | None:
    """Return a one-line reason why ``path`` is not a usable image, or None if it is."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size == 0:
            return "empty file (0 bytes)"
        with open(path, "rb") as fh:
            with Image.open(fh) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    return f"too large ({w}x{h} px > {MAX_PIXELS:,} px limit; decompression-bomb guard)"
                if w == 0 or h == 0:
                    return "image has no pixels"
                with warnings.catch_warnings():
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    im.load()
                    _to_rgb(im)
    except PermissionError:
        return "unreadable (permission denied)"
    except IsADirectoryError:
        return "is a directory"
    except UnidentifiedImageError:
        return "not an image (unrecognised format)"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        return f"too large ({err}; decompression-bomb guard)"
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        # PIL reports truncated or corrupt data as OSError/SyntaxError with its own message.
        return f"corrupt or truncated image ({one_line(err)})"
    return None


def load_rgb(path: str | Path) -> Image.Image:
    """Open ``path`` as an upright 8-bit RGB image (first frame of an animation)."""
    with Image.open(os.fspath(path)) as im:
        im.load()
        return _to_rgb(im)


_JPEG_MAGIC = b"\xff\xd8\xff"


def load_rgb_tensor(path: str | Path):
    """``load_rgb(path)`` as a uint8 tensor (3, H, W): the same pixels, faster for JPEGs.

    torchvision's decoder with ``ImageReadMode.RGB`` and ``apply_exif_orientation=True`` gives
    exactly PIL's pixels for baseline/progressive YCbCr, grayscale and CMYK JPEGs and for all eight
    EXIF orientations (checked in tests/test_images_fast.py). Files that are not JPEG by content
    (a PNG or GIF named .jpg) or that it refuses go through PIL.
    """
    # Imported here: torchvision takes about a second to import and only the embed path needs it.
    import torch
    from torchvision.transforms.v2.functional import pil_to_tensor

    data = Path(path).read_bytes()  # a missing or unreadable file raises OSError, as load_rgb does
    if data[:3] == _JPEG_MAGIC:
        try:
            from torchvision.io import ImageReadMode, decode_jpeg

            with warnings.catch_warnings():
                # torchvision 0.29 deprecates its decoders in favour of TorchCodec; pyproject pins
                # torchvision < 0.30, and should they go, the ImportError below falls back to PIL.
                warnings.simplefilter("ignore", DeprecationWarning)
                return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB,
                                   apply_exif_orientation=True)
        except (ImportError, RuntimeError):
            pass  # no decoder, or e.g. an arithmetic-coded or damaged JPEG that PIL may still read
    return pil_to_tensor(load_rgb(path))


def load_images(paths, transform, *, desc: str | None = None):
    """``transform(load_rgb(path))`` of every path, stacked into one tensor ``(N, ...)``.

    ``desc`` labels a progress bar (none when None). An image that cannot be read any more (it
    passed prepare's check) is one PetprobeError line.
    """
    import torch
    from petprobe.progress import progress

    try:
        return torch.stack([transform(load_rgb(path))
                            for path in progress(paths, desc=desc, unit="img", leave=False, disable=desc is None)])
    except OSError as err:
        raise PetprobeError(f"cannot read an image ({err}); rerun prepare") from None


def _to_rgb(im: Image.Image) -> Image.Image:
    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16-bit and float images: scale the full range to 8 bits instead of clipping at 255.
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        im = Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        # Transparent pixels become white, as an image viewer would show them.
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")
