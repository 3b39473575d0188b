"""Hostile image files of issue 28, made on the spot (nothing is committed): small files whose
decode costs time or memory far beyond their size, within every declared-size limit.

Used by tests/test_faults_decode.py and benchmarks/hostile_inputs.py (the before -> after table).
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

__all__ = ["scan_bomb_jpeg", "progressive_jpeg", "jpeg_scans", "png16", "png_chunk_flood", "many_page_tiff",
           "with_trailing_junk"]


def progressive_jpeg(side: int = 4096, *, mode: str = "L", quality: int = 75) -> bytes:
    """A flat grey progressive JPEG of ``side`` x ``side`` px (libjpeg's default scan script: 6 scans for
    grey, 10 for colour)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, (side, side), 128 if mode == "L" else (128, 128, 128)).save(buf, "JPEG", progressive=True,
                                                                                  quality=quality)
    return buf.getvalue()


def jpeg_scans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every scan (SOS marker to the next marker) of a well-formed JPEG, in file order."""
    scans, i = [], 2
    while i < len(data) and data[i + 1] != 0xD9:
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if data[i + 1] != 0xDA:
            i += 2 + length
            continue
        j = i + 2 + length
        while True:  # entropy-coded data: a marker is 0xFF followed by neither 0x00 (stuffing) nor RSTn
            j = data.index(b"\xff", j)
            if data[j + 1] == 0 or 0xD0 <= data[j + 1] <= 0xD7:
                j += 2
                continue
            break
        scans.append((i, j))
        i = j
    return scans


def scan_bomb_jpeg(side: int = 4096, repeats: int = 20_000) -> bytes:
    """The issue's progressive-JPEG CPU bomb: the last AC refinement scan (33 bytes for a flat grey
    image) repeated ``repeats`` times before the end marker. 4096 px and 20,000 repeats: 726 KB,
    each repeat one more pass of the decoder over all 262,144 blocks."""
    data = progressive_jpeg(side)
    start, end = jpeg_scans(data)[-1]
    return data[:end] + data[start:end] * repeats + data[end:]


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png16(side: int = 7071) -> bytes:
    """A flat 16-bit grey PNG of ``side`` x ``side`` px (7071 px: 50.0 MP, just under the pixel limit;
    about 110 KB), compressed row by row so making it costs no memory."""
    chunk = _chunk
    row = b"\x00" + b"\x80\x00" * side
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def png_chunk_flood(chunks: int = 100_000, side: int = 64) -> bytes:
    """A small grey PNG whose pixels follow ``chunks`` empty IDAT chunks (12 bytes each): PIL reads
    each one in Python, two reads a chunk."""
    pixels = zlib.compress(b"".join(b"\x00" + b"\x80" * side for _ in range(side)))
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + _chunk(b"IDAT", b"") * chunks + _chunk(b"IDAT", pixels) + _chunk(b"IEND", b""))


def many_page_tiff(pages: int = 60_000) -> bytes:
    """A little-endian TIFF of ``pages`` one-pixel grey pages (60,000 pages: 6.8 MB), every page's
    strip the same byte."""
    tags = 9
    ifd_size = 2 + tags * 12 + 4
    pixel = 8  # the one strip byte, right after the header
    first = 16
    out = [b"II*\x00" + struct.pack("<I", first) + b"\x80" + bytes(first - 9)]
    for k in range(pages):
        offset = first + k * ifd_size
        following = offset + ifd_size if k + 1 < pages else 0
        entries = [(256, 3, 1, 1), (257, 3, 1, 1), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
                   (273, 4, 1, pixel), (277, 3, 1, 1), (278, 3, 1, 1), (279, 4, 1, 1)]
        out.append(struct.pack("<H", tags) + b"".join(struct.pack("<HHII", *e) for e in entries)
                   + struct.pack("<I", following))
    return b"".join(out)


def with_trailing_junk(path: str | Path, image: bytes, junk_bytes: int) -> Path:
    """Write ``image`` followed by ``junk_bytes`` zero bytes (a sparse file: no disk used)."""
    path = Path(path)
    with open(path, "wb") as fh:
        fh.write(image)
        fh.truncate(len(image) + junk_bytes)
    return path
