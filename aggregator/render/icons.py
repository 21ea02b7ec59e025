"""The service's icons (OpenSearch `Image`, favicon), drawn in code: no binary files to keep."""

from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Callable

RGBA = tuple[int, int, int, int]


def png(width: int, height: int, pixel: Callable[[int, int], RGBA]) -> bytes:
    """An RGBA PNG whose pixel (x, y) -> (r, g, b, a) is given by `pixel`."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"".join(bytes(pixel(x, y)) for x in range(width)) for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


@functools.cache
def play_icon(size: int) -> bytes:
    """A rounded blue square with a white play triangle."""
    radius = size * 0.22
    blue, white, clear = (29, 78, 216, 255), (255, 255, 255, 255), (0, 0, 0, 0)

    def pixel(x: int, y: int) -> RGBA:
        cx, cy = x + 0.5, y + 0.5
        dx = max(radius - cx, 0, cx - (size - radius))
        dy = max(radius - cy, 0, cy - (size - radius))
        if dx * dx + dy * dy > radius * radius:
            return clear
        # Triangle with its left edge at 36% and tip at 72% of the width.
        left, right, mid = size * 0.36, size * 0.72, size / 2
        if left <= cx <= right:
            half = (right - cx) / (right - left) * size * 0.22
            if abs(cy - mid) <= half:
                return white
        return blue

    return png(size, size, pixel)
