"""A dependency-free PNG writer: 8-bit grayscale or RGB images, zlib + struct only.

The format (ISO/IEC 15948): an 8-byte signature, then chunks of (length, type, data,
CRC-32 of type + data): IHDR (size, bit depth, colour type), IDAT (the zlib-compressed
rows, each preceded by a filter-type byte, 0 = none here), IEND.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import torch
from torch import Tensor

SIGNATURE = b"\x89PNG\r\n\x1a\n"
GRAYSCALE, RGB = 0, 2  # PNG colour types


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(image: Tensor) -> bytes:
    """PNG bytes of an image in [0, 1] shaped (H, W), (1, H, W) or (3, H, W); values are clamped."""
    if image.dim() == 2:
        image = image[None]
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"image must have shape (H, W), (1, H, W) or (3, H, W), got {tuple(image.shape)}")
    channels, height, width = image.shape
    pixels = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    rows = pixels.permute(1, 2, 0).reshape(height, width * channels)  # (H, W * C), channels interleaved
    filtered = torch.cat([torch.zeros(height, 1, dtype=torch.uint8), rows], dim=1)  # filter byte 0 per row
    header = struct.pack(">IIBBBBB", width, height, 8, GRAYSCALE if channels == 1 else RGB, 0, 0, 0)
    return (
        SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(filtered.numpy().tobytes(), 6))
        + _chunk(b"IEND", b"")
    )


def write_png(image: Tensor, path: str | Path) -> Path:
    """Write `image` (see `encode_png`) to `path`; returns the path."""
    path = Path(path)
    path.write_bytes(encode_png(image))
    return path
