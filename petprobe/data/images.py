"""Opening images the way real datasets need: check them fully, load any readable one as RGB.

``inspect_image`` decodes every pixel (a truncated JPEG often opens fine and fails only at the
end) and returns why a file cannot be used, or None. ``load_rgb`` turns every accepted file
(CMYK, grayscale, palette, 16-bit, RGBA, animated GIF, EXIF-rotated, a PNG named .jpg) into an
upright 8-bit RGB image. ``load_rgb_tensor`` gives the same pixels as a uint8 tensor, decoding
JPEGs with torchvision.io (libjpeg-turbo, no PIL round trip) and anything else through ``load_rgb``.

Memory is bounded before any pixel is decoded: the header's size must pass ``size_problem``
(area, each side, aspect ratio). The aspect-ratio bound is what keeps the *resize* bounded: the
shorter side is scaled to the backbone's resize (256 px), so a 1x40000 strip would become a
256x10,240,000 image (7.9 GB); within 1:``MAX_ASPECT`` the resized image is at most
256x5120 px. Photos are far inside these bounds, so their pixels are decoded and resized exactly
as before (no draft mode, no crop-before-resize, which would change them). Any exception a
decoder raises, of any type, is a rejection with its reason, never a crash.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from petprobe.errors import PetprobeError, one_line

__all__ = ["MAX_PIXELS", "MAX_SIDE", "MAX_ASPECT", "UnusableImage", "size_problem", "inspect_image", "load_rgb",
           "load_rgb_tensor", "load_images"]

# Larger than any photo in the reference datasets by two orders of magnitude, small enough that a
# decompression bomb (a tiny file that claims gigapixels) is refused before it is decoded.
MAX_PIXELS = 50_000_000
# Each side, and the longer side over the shorter. Panoramas of real cameras stay within 1:8.
MAX_SIDE = 30_000
MAX_ASPECT = 20


def size_problem(width: int, height: int) -> str | None:
    """Why an image of this size (from its header) is refused before decoding, or None."""
    w, h = width, height
    if w <= 0 or h <= 0:
        return "image has no pixels"
    if w * h > MAX_PIXELS:
        return f"too large ({w}x{h} px > {MAX_PIXELS:,} px limit; decompression-bomb guard)"
    if max(w, h) > MAX_SIDE:
        return f"too large ({w}x{h} px; a side over {MAX_SIDE:,} px)"
    if max(w, h) > MAX_ASPECT * min(w, h):
        # Resizing the shorter side to 256 px would make the longer one 256 * ratio px long.
        return f"extreme aspect ratio ({w}x{h} px; the limit is 1:{MAX_ASPECT})"
    return None


class UnusableImage(OSError):
    """An image refused by ``size_problem`` at load time (an OSError, as any unreadable file)."""


def _check_size(im: Image.Image) -> None:
    if (problem := size_problem(*im.size)) is not None:
        raise UnusableImage(problem)


def inspect_image(path: str | Path) -> str | None:
    """Return a one-line reason why ``path`` is not a usable image, or None if it is."""
    path = Path(path)
    try:
        info = path.stat()
    except OSError as err:  # missing, a dangling link, a symlink loop (ELOOP)
        return f"unreadable ({err.strerror or one_line(err)})"
    if stat.S_ISDIR(info.st_mode):
        return "is a directory"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file (FIFO, socket or device)"  # opening a FIFO would wait forever
    try:
        if info.st_size == 0:
            return "empty file (0 bytes)"
        with open(path, "rb") as fh:
            with Image.open(fh) as im:
                if (problem := size_problem(*im.size)) is not None:
                    return problem
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
    except Exception as err:  # noqa: BLE001 - any decoder failure (NotImplementedError, TypeError, ...)
        # Damaged DDS/TIFF/... files make PIL's plugins raise types it never documents.
        return f"corrupt or undecodable image ({type(err).__name__}: {one_line(err)})"
    return None


def load_rgb(path: str | Path) -> Image.Image:
    """Open ``path`` as an upright 8-bit RGB image (first frame of an animation)."""
    with Image.open(os.fspath(path)) as im:
        _check_size(im)  # before any pixel is decoded
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
            with Image.open(io.BytesIO(data)) as header:  # header only: the size, before decoding
                _check_size(header)
        except UnusableImage:
            raise
        except Exception:  # noqa: BLE001 - PIL cannot parse the header; decode_jpeg may still
            pass
        try:
            from torchvision.io import ImageReadMode, decode_jpeg

            with warnings.catch_warnings():
                # torchvision 0.29 deprecates its decoders in favour of TorchCodec; pyproject pins
                # torchvision < 0.30, and should they go, the ImportError below falls back to PIL.
                warnings.simplefilter("ignore", DeprecationWarning)
                return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB,
                                   apply_exif_orientation=True)
        except Exception:  # noqa: BLE001 - no decoder (ImportError), or a damaged or arithmetic-coded JPEG
            pass  # (RuntimeError) that PIL may still read; PIL's verdict is the one that counts
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
    except Exception as err:  # noqa: BLE001 - any decoder failure of a file that passed prepare
        raise PetprobeError(f"cannot read an image ({type(err).__name__}: {one_line(err)}); rerun prepare") from None


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
