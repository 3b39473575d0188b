"""A JPEG's structure read before any pixel is decoded: how much decoding its scans ask for, and where it ends.

A progressive JPEG may hold any number of scans, and each scan is a pass of the decoder over every
8x8 block of the components it names, however few bytes it takes: a flat 4096x4096 grey image
whose last 33-byte refinement scan is repeated 20,000 times (726 KB) costs minutes to decode,
within every size limit (issue 28; the attack is the one libjpeg-turbo's ``TJPARAM_SCANLIMIT``
exists for, "Two Issues with the JPEG Standard", D. R. Commander). ``jpeg_layout`` walks the
markers (segment lengths, then the entropy-coded data of each scan up to its next marker, never
decoding it) and counts the blocks all scans decode together. A bound on that count bounds the
decoding work whatever the image size, where a bound on the number of scans would still let each
scan of a 50-megapixel image cost a second.

The walk also finds the end-of-image marker, so a loader reads the image and not whatever junk
follows it. Reads are chunked: memory stays at one chunk, whatever the file holds.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import BinaryIO

__all__ = ["JPEG_MAGIC", "JpegLayout", "jpeg_layout"]

JPEG_MAGIC = b"\xff\xd8\xff"

# Start-of-frame markers (baseline, extended, progressive, lossless; Huffman or arithmetic coded);
# 0xC4 (DHT), 0xC8 (JPG) and 0xCC (DAC) share the range but are not frames.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_SOS, _EOI = 0xDA, 0xD9
# Markers without a length field: TEM and the restart markers RST0-7.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
# Inside entropy-coded data 0xFF is followed by 0x00 (a stuffed 0xFF byte), by RSTn, or by more
# 0xFF fill bytes; anything else begins the next marker.
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class JpegLayout:
    """What the markers of a JPEG say before it is decoded.

    ``scan_blocks``: 8x8 blocks decoded over all scans (a baseline colour photo: about 1.5 x its
    pixels / 64 with 4:2:0 chroma; libjpeg's default progressive script: about 4 times that).
    ``scans``: the number of scans. ``end``: the offset just past the end-of-image marker, or None
    when the walk did not reach one (a truncated or damaged file, left to the decoder's verdict).
    """

    scan_blocks: int
    scans: int
    end: int | None


class _Reader:
    """Sequential reads of a binary file in chunks, tracking the absolute offset."""

    def __init__(self, fh: BinaryIO):
        self.fh, self.buf, self.i, self.base = fh, b"", 0, fh.tell()

    @property
    def offset(self) -> int:
        return self.base + self.i

    def _fill(self, n: int) -> bool:
        """At least ``n`` unread bytes in the buffer; False at the end of the file."""
        while len(self.buf) - self.i < n:
            chunk = self.fh.read(max(_CHUNK, n))
            if not chunk:
                return False
            self.base += self.i
            self.buf, self.i = self.buf[self.i:] + chunk, 0
        return True

    def read(self, n: int) -> bytes | None:
        if not self._fill(n):
            return None
        out = self.buf[self.i:self.i + n]
        self.i += n
        return out

    def skip(self, n: int) -> None:
        have = len(self.buf) - self.i
        if n <= have:
            self.i += n
            return
        self.fh.seek(n - have, 1)  # past the end is fine: the next read finds nothing
        self.base += len(self.buf) + n - have
        self.buf, self.i = b"", 0

    def to_next_marker(self) -> bool:
        """Move to the 0xFF that starts the next marker after entropy-coded data; False at the end."""
        while True:
            found = _NEXT_MARKER.search(self.buf, self.i)
            if found:
                self.i = found.start()
                return True
            keep = max(self.i, len(self.buf) - 1)  # a 0xFF at the very end needs the next byte
            self.base += keep
            self.buf, self.i = self.buf[keep:], 0
            chunk = self.fh.read(_CHUNK)
            if not chunk:
                return False
            self.buf += chunk


def _frame_blocks(segment: bytes) -> dict[int, int] | None:
    """Blocks per component id, from a start-of-frame segment's payload (None if malformed)."""
    if len(segment) < 6:
        return None
    height, width = int.from_bytes(segment[1:3], "big"), int.from_bytes(segment[3:5], "big")
    n = min(segment[5], (len(segment) - 6) // 3)
    comps = [(segment[6 + 3 * k], segment[7 + 3 * k] >> 4, segment[7 + 3 * k] & 15) for k in range(n)]
    if not comps:
        return None
    h_max, v_max = max(h for _, h, _ in comps) or 1, max(v for _, _, v in comps) or 1
    return {cid: math.ceil(math.ceil(width * h / h_max) / 8) * math.ceil(math.ceil(height * v / v_max) / 8)
            for cid, h, v in comps}


def jpeg_layout(fh: BinaryIO) -> JpegLayout:
    """Walk the markers of the JPEG in ``fh`` (from its current position) without decoding it.

    A file the walk cannot follow (a segment running past the end, a byte where a marker should
    be) stops the walk with ``end=None``: whether such a file is usable is the decoder's call.
    Scans before any frame header count no blocks (a decoder refuses them).
    """
    r = _Reader(fh)
    if r.read(2) != b"\xff\xd8":
        return JpegLayout(0, 0, None)
    blocks: dict[int, int] | None = None
    scan_blocks = scans = 0
    while True:
        byte = r.read(1)
        if byte != b"\xff":
            return JpegLayout(scan_blocks, scans, None)
        marker = r.read(1)
        while marker == b"\xff":  # fill bytes before a marker
            marker = r.read(1)
        if marker is None:
            return JpegLayout(scan_blocks, scans, None)
        code = marker[0]
        if code == _EOI:
            return JpegLayout(scan_blocks, scans, r.offset)
        if code in _STANDALONE:
            continue
        size = r.read(2)
        if size is None or int.from_bytes(size, "big") < 2:
            return JpegLayout(scan_blocks, scans, None)
        length = int.from_bytes(size, "big") - 2
        if code in _SOF or code == _SOS:
            payload = r.read(length)
            if payload is None:
                return JpegLayout(scan_blocks, scans, None)
            if code in _SOF:
                blocks = _frame_blocks(payload)
                continue
            scans += 1
            if blocks and payload:
                named = payload[1:1 + 2 * payload[0]:2]  # component ids of the scan
                scan_blocks += sum(blocks.get(cid, 0) for cid in named)
            if not r.to_next_marker():
                return JpegLayout(scan_blocks, scans, None)
        else:
            r.skip(length)
