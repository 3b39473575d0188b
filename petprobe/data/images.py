"""Opening images the way real datasets need: check them fully, load any readable one as RGB.

``inspect_image`` decodes every pixel (a truncated JPEG often opens fine and fails only at the
end) and returns why a file cannot be used, or None. ``load_rgb`` turns every accepted file
(CMYK, grayscale, palette, 16-bit, RGBA, animated GIF, EXIF-rotated, a PNG named .jpg) into an
upright 8-bit RGB image. ``load_rgb_tensor`` gives the same pixels as a uint8 tensor, decoding
JPEGs with torchvision.io (libjpeg-turbo, no PIL round trip) and anything else through ``load_rgb``.

Every read goes through ``open_image_file``, so the check and every later reader (embed, render,
explain, evaluate, predict) apply the same rules where the bytes are read, not only where a path
was listed: a regular file (a FIFO or ``/dev/zero`` is never read), at most ``MAX_FILE_BYTES``,
and a file named under ``data/raw/<ds>/`` must resolve inside that folder after its links are
followed (``Artefacts.raw_folder_of``). Reads are chunked by the decoders; nothing reads a file whole.

Work is bounded before any pixel is decoded, by the header and the file's structure:
- the size must pass ``size_problem`` (area, each side, aspect ratio). The aspect-ratio bound is
  what keeps the *resize* bounded: the shorter side is scaled to the backbone's resize (256 px), so
  a 1x40000 strip would become a 256x10,240,000 image (7.9 GB); within 1:``MAX_ASPECT`` the
  resized image is at most 256x5120 px;
- a JPEG's scans must stay within ``MAX_JPEG_SCANS`` and ``MAX_JPEG_SCAN_BLOCKS`` (``data.jpeg``:
  a progressive JPEG can repeat a 33-byte scan until decoding takes minutes), and only the bytes
  up to its end-of-image marker are read, so junk after the image is never loaded;
- only the first frame of a multi-frame file is touched (asking PIL for the frame count walks
  every page: 31 s for a 6 MB TIFF of 60,000 pages);
- a decoder may make at most ``MAX_DECODER_READS`` reads of the file: PIL parses PNG chunks and
  GIF blocks in Python, one read or more each, so a flood of empty chunks costs seconds per
  10 MB, whereas real images are read in 64 KB blocks (a few hundred reads; the reference photos
  at most 54);
- 16-bit and float images are scaled to 8 bits band by band, without a float64 copy of the whole
  image, and the deep source is freed before the 8-bit copies are made, so memory follows the
  output (a 97 KB 16-bit PNG of 7071x7071 px took 1.4 GB before; now 0.3 GiB with Python and PIL).
These are structural bounds, not time limits: the verdict on a file is the same on every machine
and under any load, as a DVC pipeline needs. Photos are far inside them, so their pixels are
decoded and resized exactly as before (no draft mode, no crop-before-resize, which would change
them). Any exception a decoder raises, of any type, is a rejection with its reason, never a
crash; what decoders print (libjpeg and libtiff write to the process's stderr, PIL warns) goes
into the reason of a rejected file and is dropped for a usable one, never onto the terminal.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import sys
import tempfile
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from petprobe.artefacts import Artefacts
from petprobe.data.jpeg import JPEG_MAGIC, JpegLayout, jpeg_layout
from petprobe.errors import PetprobeError, one_line, shorten

__all__ = ["MAX_PIXELS", "MAX_SIDE", "MAX_ASPECT", "MAX_FILE_BYTES", "MAX_JPEG_SCANS", "MAX_JPEG_SCAN_BLOCKS",
           "MAX_DECODER_READS",
           "UnusableImage", "size_problem", "open_image_file", "inspect_image", "load_rgb", "load_rgb_tensor",
           "load_images"]

# Larger than any photo in the reference datasets by two orders of magnitude, small enough that a
# decompression bomb (a tiny file that claims gigapixels) is refused before it is decoded.
MAX_PIXELS = 50_000_000
# Each side, and the longer side over the shorter. Panoramas of real cameras stay within 1:8.
MAX_SIDE = 30_000
MAX_ASPECT = 20
# An uncompressed 16-bit RGBA image of MAX_PIXELS is 400 MB; the reference photos are under 1 MB.
MAX_FILE_BYTES = 512 * 2**20
# libjpeg's default progressive script has 10 scans (6 for grey); libjpeg-turbo's own fuzzers stop
# at 500 (TJPARAM_SCANLIMIT). Every scan costs a fixed set-up however few blocks it names.
MAX_JPEG_SCANS = 256
# 8x8 blocks decoded over all scans: 16 passes over every component of a MAX_PIXELS image, about
# 2 s of decoding here (130-180 ns per block of an empty refinement scan). The reference photos
# need at most 8.2 passes over their own pixels (progressive 4:2:0); a baseline photo needs 1.5.
MAX_JPEG_SCAN_BLOCKS = 16 * MAX_PIXELS // 64
# Reads a decoder may make of one file. PIL reads real images in 64 KB blocks: a 22 MB PNG of
# noise in 1,056 reads; libpng's 8 KB IDAT chunks would give a 400 MB PNG (16-bit RGBA at
# MAX_PIXELS) about 100,000. A PNG of 100,000 empty IDAT chunks (1.2 MB) takes 200,000 reads and
# 1.5-3.6 s here, so this bounds such a flood to about that, whatever the file size.
MAX_DECODER_READS = 2**17
# JPEGs above this size are decoded by PIL from the file instead of torchvision from memory, so a
# reader never holds a large file in memory (photos are far smaller: the fast path is for them).
_FAST_JPEG_BYTES = 64 * 2**20
# Rows converted at a time from 16-bit/float to 8-bit (a 7071 px wide band: 14 MB of float64).
_BAND_ROWS = 256


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
    """A file refused by the limits before it is decoded (an OSError, as any unreadable file)."""


def _check_size(im: Image.Image) -> None:
    if (problem := size_problem(*im.size)) is not None:
        raise UnusableImage(problem)


def _jpeg_problem(layout: JpegLayout) -> str | None:
    if layout.scans > MAX_JPEG_SCANS:
        return (f"too many JPEG scans ({layout.scans:,}; the limit is {MAX_JPEG_SCANS}): "
                "a decode-time bomb (progressive scans repeated)")
    if layout.scan_blocks > MAX_JPEG_SCAN_BLOCKS:
        return (f"too much JPEG decoding ({layout.scan_blocks:,} 8x8 blocks over {layout.scans} scans; the limit is "
                f"{MAX_JPEG_SCAN_BLOCKS:,}): a decode-time bomb (progressive scans repeated)")
    return None


def open_image_file(path: str | Path) -> BinaryIO:
    """``path`` opened for reading, after the checks every image read must pass.

    Raises UnusableImage when the file is not a regular file, is empty or over ``MAX_FILE_BYTES``,
    or is named under ``data/raw/<ds>/`` but resolves outside that folder (a link pointing out,
    or ``..``); any other OSError (missing, unreadable, a symlink loop) as ``open`` raises it.
    The resolved path is opened without following links (a link swapped in after the check is
    not followed) and without blocking (opening a FIFO would wait for a writer forever); the
    checks are made on the open descriptor, so what is checked is what is read.
    """
    real = os.path.realpath(path)
    if (folder := Artefacts.raw_folder_of(path)) is not None:
        allowed = [os.path.realpath(folder), os.path.realpath(Artefacts.dvc_cache())]
        if not any(os.path.commonpath([real, root]) == root for root in allowed):
            raise UnusableImage(f"resolves outside {folder}/ (to {real}); not read")
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(real, flags)
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(21, "Is a directory", os.fspath(path))
        if not stat.S_ISREG(info.st_mode):
            raise UnusableImage("not a regular file (FIFO, socket or device)")
        if info.st_size == 0:
            raise UnusableImage("empty file (0 bytes)")
        if info.st_size > MAX_FILE_BYTES:
            raise UnusableImage(f"file too large ({info.st_size:,} bytes; the limit is {MAX_FILE_BYTES:,})")
        os.set_blocking(fd, True)
        return _ReadBudget(io.FileIO(fd, "rb"))
    except BaseException:
        os.close(fd)
        raise


class _ReadBudget(io.BufferedReader):
    """A buffered file that refuses more than MAX_DECODER_READS reads (a chunk-flood bomb)."""

    _reads = 0

    def _spend(self) -> None:
        self._reads += 1
        if self._reads > MAX_DECODER_READS:
            raise UnusableImage(f"over {MAX_DECODER_READS:,} reads to decode: a decode-time bomb (a flood of "
                                "empty chunks or blocks)")

    def read(self, size=-1, /):
        self._spend()
        return super().read(size)

    def read1(self, size=-1, /):
        self._spend()
        return super().read1(size)

    def readinto(self, buffer, /):
        self._spend()
        return super().readinto(buffer)

    def readline(self, size=-1, /):
        self._spend()
        return super().readline(size)


@contextlib.contextmanager
def _decoder_output(messages: list[str]):
    """Collect what decoders print instead of letting it reach the terminal: libjpeg's and
    libtiff's messages (C code writing to file descriptor 2) and PIL's Python warnings, appended
    to ``messages`` when the block ends (also when it raises)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            printed = sink.read(4096).decode("utf-8", "replace").splitlines()
            for text in [*printed, *(str(w.message) for w in caught if w.category is not DeprecationWarning)]:
                if (text := " ".join(text.split())) and text not in messages:
                    messages.append(text)


def _jpeg_checked(fh: BinaryIO) -> JpegLayout | None:
    """The layout of a JPEG (None for any other file), refused if its scans are a decode-time bomb;
    ``fh`` is left at the start."""
    fh.seek(0)
    if fh.read(3) != JPEG_MAGIC:
        fh.seek(0)
        return None
    fh.seek(0)
    layout = jpeg_layout(fh)
    fh.seek(0)
    if (problem := _jpeg_problem(layout)) is not None:
        raise UnusableImage(problem)
    return layout


def _pil_rgb(fh: BinaryIO) -> Image.Image:
    """The open file decoded by PIL as upright 8-bit RGB, its size checked before decoding."""
    return _to_rgb(_pil_8bit(fh))


def _pil_8bit(fh: BinaryIO) -> Image.Image:
    """The open file decoded by PIL, upright, 8 bits per channel in whatever mode it has (L, RGB, P...).

    A 16-bit or float source is closed, which frees its pixels, before anything else is allocated:
    a 7071x7071 16-bit PNG holds 100 MB, and keeping it alive beside its RGB and tensor copies
    more than doubled the peak.
    """
    im = Image.open(fh)
    try:
        _check_size(im)  # before any pixel is decoded
        im.load()
        ImageOps.exif_transpose(im, in_place=True)  # the image is this module's own: no copy needed
        if im.mode in _HIGH_DEPTH:
            high, im = im, _to_8bit(im)
            high.close()
        return im
    except BaseException:
        im.close()
        raise


def inspect_image(path: str | Path) -> str | None:
    """Return a one-line reason why ``path`` is not a usable image, or None if it is."""
    try:
        fh = open_image_file(path)
    except UnusableImage as err:
        return str(err)
    except PermissionError:
        return "unreadable (permission denied)"
    except IsADirectoryError:
        return "is a directory"
    except OSError as err:  # missing, a dangling link, a symlink loop (ELOOP)
        return f"unreadable ({err.strerror or one_line(err)})"
    messages: list[str] = []
    try:
        with fh, _decoder_output(messages):
            _jpeg_checked(fh)
            _pil_rgb(fh)
    except UnusableImage as err:
        return str(err)
    except UnidentifiedImageError:
        return "not an image (unrecognised format)"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        return f"too large ({err}; decompression-bomb guard)"
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        # PIL reports truncated or corrupt data as OSError/SyntaxError with its own message.
        return f"corrupt or truncated image ({one_line(err)}){_said(messages)}"
    except Exception as err:  # noqa: BLE001 - any decoder failure (NotImplementedError, TypeError, ...)
        # Damaged DDS/TIFF/... files make PIL's plugins raise types it never documents.
        return f"corrupt or undecodable image ({type(err).__name__}: {one_line(err)}){_said(messages)}"
    return None


def _said(messages: list[str]) -> str:
    return f"; the decoder said: {shorten(' | '.join(messages), 300)}" if messages else ""


def load_rgb(path: str | Path) -> Image.Image:
    """Open ``path`` as an upright 8-bit RGB image (first frame of an animation)."""
    with open_image_file(path) as fh, _decoder_output([]):
        _jpeg_checked(fh)
        return _pil_rgb(fh)


def load_rgb_tensor(path: str | Path):
    """``load_rgb(path)`` as a uint8 tensor (3, H, W): the same pixels, faster for JPEGs.

    torchvision's decoder with ``ImageReadMode.RGB`` and ``apply_exif_orientation=True`` gives
    exactly PIL's pixels for baseline/progressive YCbCr, grayscale and CMYK JPEGs and for all eight
    EXIF orientations (checked in tests/test_embed_fast.py). It gets the bytes up to the JPEG's
    end marker only. Files that are not JPEG by content (a PNG or GIF named .jpg), larger JPEGs,
    and JPEGs it refuses go through PIL.
    """
    # Imported here: torchvision takes about a second to import and only the embed path needs it.
    import torch
    from torchvision.transforms.v2.functional import pil_to_tensor

    with open_image_file(path) as fh, _decoder_output([]):
        layout = _jpeg_checked(fh)
        if layout is not None and (tensor := _fast_jpeg(fh, layout)) is not None:
            return tensor
        image = _pil_8bit(fh)
        if image.mode == "L":  # grey: the channel repeated, as convert("RGB") does, without PIL's 4-byte RGB copy
            grey = torch.from_numpy(np.asarray(image))
            del image
            # (H, W, 3) in memory, as pil_to_tensor lays out RGB: the uint8 resize reads it without a copy
            return grey[:, :, None].expand(*grey.shape, 3).clone().permute(2, 0, 1)
        return pil_to_tensor(_to_rgb(image))


def _fast_jpeg(fh: BinaryIO, layout: JpegLayout):
    """The JPEG in ``fh`` decoded by torchvision, or None to leave it to PIL (``fh`` back at the start)."""
    import torch

    size = layout.end if layout.end is not None else os.fstat(fh.fileno()).st_size
    if size > _FAST_JPEG_BYTES:
        return None
    try:
        with Image.open(fh) as header:  # header only: the size, before decoding
            _check_size(header)
    except UnusableImage:
        raise
    except Exception:  # noqa: BLE001 - PIL cannot parse the header; decode_jpeg may still
        pass
    fh.seek(0)
    data = bytearray(fh.read(size))
    fh.seek(0)
    try:
        from torchvision.io import ImageReadMode, decode_jpeg

        # torchvision 0.29 deprecates its decoders in favour of TorchCodec (the warning is dropped
        # with the decoders' output); pyproject pins torchvision < 0.30, and should they go, the
        # ImportError below falls back to PIL.
        return decode_jpeg(torch.frombuffer(data, dtype=torch.uint8), mode=ImageReadMode.RGB,
                           apply_exif_orientation=True)
    except Exception:  # noqa: BLE001 - no decoder (ImportError), or a damaged or arithmetic-coded JPEG
        return None  # (RuntimeError) that PIL may still read; PIL's verdict is the one that counts


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


_HIGH_DEPTH = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def _to_rgb(im: Image.Image) -> Image.Image:
    """An upright 8-bit image from ``_pil_8bit`` as RGB."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        # Transparent pixels become white, as an image viewer would show them.
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def _to_8bit(im: Image.Image) -> Image.Image:
    """16-bit and float images as 8-bit grey: the full range scaled to 8 bits instead of clipped at
    255, rounded to nearest: ``clip(v / full * 255 + 0.5, 0, 255)`` truncated to uint8, ``full``
    65535 for 16-bit data and for 32-bit data above 255, else 255. Converted in bands of rows, so
    no float64 copy of the whole image is ever made (a 7071x7071 16-bit PNG took 1.4 GB that way).

    16-bit values take the integer form of the same rounding, ``(v + 128) // 257``: 65535 = 255 x 257
    and v / 257 is never exactly halfway, so it equals the float formula for every one of the
    65,536 values (tests/test_faults_decode.py checks all of them).
    """
    def bands(dtype):
        for top in range(0, im.height, _BAND_ROWS):
            yield top, np.asarray(im.crop((0, top, im.width, min(top + _BAND_ROWS, im.height))), dtype=dtype)

    out = Image.new("L", im.size)
    if im.mode.startswith("I;16"):
        for top, band in bands(np.uint32):
            out.paste(Image.fromarray(((band + 128) // 257).astype(np.uint8), "L"), (0, top))
        return out
    # 32-bit int or float: the 16-bit range if any value is above 255 (np.max: a NaN gives 255, as before)
    full = 65535.0 if np.max([band.max() for _, band in bands(np.float64)]) > 255 else 255.0
    for top, band in bands(np.float64):
        out.paste(Image.fromarray(np.clip(band / full * 255.0 + 0.5, 0, 255).astype(np.uint8), "L"), (0, top))
    return out
