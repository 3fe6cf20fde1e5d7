"""The IDX format of MNIST (LeCun et al. 1998) and Fashion-MNIST (Xiao et al. 2017); their four files.

An IDX file (http://yann.lecun.com/exdb/mnist/) is a big-endian int32 magic number 0x0000TTNN
(TT = element type, 0x08 for unsigned bytes; NN = number of dimensions), NN big-endian int32
sizes, then the elements in C order; the datasets ship them gzip-compressed. Both datasets
have the same four files: training images and labels (60,000), test images and labels (10,000).
"""

from __future__ import annotations

import math
import os
import pathlib
import struct
import zlib
from typing import BinaryIO

import numpy as np

from vi_lab.data.source import Arrays, DataFileError, open_file, read_error

IDX_UINT8 = 0x08
CHUNK_BYTES = 1 << 20

# the official names of the four files of MNIST and Fashion-MNIST
LECUN_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def _read_exact(stream: BinaryIO, count: int, path: pathlib.Path, what: str) -> bytes:
    data = stream.read(count)
    if len(data) != count:
        raise DataFileError(f"{path}: truncated {what}: expected {count} bytes, found {len(data)}.")
    return data


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (gzip-compressed if the name ends with .gz).

    Returns a uint8 array whose shape is the dimensions in the header.
    """
    path = pathlib.Path(path)
    try:
        with open_file(path) as stream:
            magic = _read_exact(stream, 4, path, "IDX magic number")
            zero, dtype_code, ndim = struct.unpack(">HBB", magic)
            if zero != 0 or dtype_code != IDX_UINT8 or ndim == 0:
                raise DataFileError(
                    f"{path}: not an IDX file of unsigned bytes: magic number 0x{magic.hex()}, expected "
                    f"0x0000{IDX_UINT8:02x}NN with NN >= 1 dimensions. Is this an MNIST file?"
                )
            dims = struct.unpack(f">{ndim}i", _read_exact(stream, 4 * ndim, path, "IDX dimensions"))
            if min(dims) < 0:
                raise DataFileError(f"{path}: negative dimension in IDX header {dims}.")
            expected = math.prod(dims)
            data = np.empty(expected, dtype=np.uint8)
            buffer = memoryview(data)
            found = 0
            while found < expected and (n := stream.readinto(buffer[found:])):
                found += n
            while chunk := stream.read(CHUNK_BYTES):
                found += len(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise read_error(path, exc) from exc
    if found != expected:
        problem = "file is truncated" if found < expected else "file has trailing bytes"
        raise DataFileError(
            f"{path}: {problem}: the IDX header gives shape {dims}, so {expected} data bytes were "
            f"expected after it, but {found} were found. Delete the file and get it again."
        )
    return data.reshape(dims)


def read_lecun(directory: pathlib.Path) -> Arrays:
    """The four LECUN_FILES in `directory` as train/test arrays: images (N, 1, H, W) uint8, labels (N,)."""
    arrays = {key: read_idx(directory / name) for key, name in LECUN_FILES.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DataFileError(
                f"{directory}: {split} images of shape {images.shape} and labels of shape {labels.shape} "
                "do not pair up: expected (N, H, W) and (N,)."
            )
    return Arrays(
        images={split: arrays[f"{split}_images"][:, None] for split in ("train", "test")},
        labels={split: arrays[f"{split}_labels"] for split in ("train", "test")},
    )
