"""The IDX reader of MNIST and Fashion-MNIST (vi_lab.data.idx), on tiny files written here."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from tests.data.files import idx_bytes
from vi_lab.data.idx import read_idx
from vi_lab.data.source import DataFileError


def write(path, content: bytes):
    path.write_bytes(gzip.compress(content) if path.suffix == ".gz" else content)
    return path


@pytest.mark.parametrize("name", ["images-idx3-ubyte.gz", "images-idx3-ubyte"])
def test_read_idx_round_trips_images(tmp_path, name):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 7
    result = read_idx(write(tmp_path / name, idx_bytes(images)))
    assert result.dtype == np.uint8
    assert result.shape == (2, 3, 4)
    np.testing.assert_array_equal(result, images)


@pytest.mark.parametrize("name", ["labels-idx1-ubyte.gz", "labels-idx1-ubyte"])
def test_read_idx_round_trips_labels(tmp_path, name):
    labels = np.array([9, 0, 3, 3, 7], dtype=np.uint8)
    result = read_idx(str(write(tmp_path / name, idx_bytes(labels))))
    assert result.dtype == np.uint8
    assert result.shape == (5,)
    np.testing.assert_array_equal(result, labels)


@pytest.mark.parametrize(
    ("name", "content", "expected", "found", "problem"),
    [
        ("short-idx3-ubyte.gz", idx_bytes(np.zeros((2, 3, 4), dtype=np.uint8))[:-5], 24, 19, "truncated"),
        ("long-idx1-ubyte", idx_bytes(np.zeros(4, dtype=np.uint8)) + b"xyz", 4, 7, "trailing bytes"),
    ],
)
def test_read_idx_payload_of_the_wrong_length(tmp_path, name, content, expected, found, problem):
    path = write(tmp_path / name, content)
    with pytest.raises(DataFileError, match=name.replace(".", r"\.")) as info:
        read_idx(path)
    message = str(info.value)
    assert f"{expected} data bytes were expected" in message and f"{found} were found" in message
    assert problem in message


def test_read_idx_truncated_header(tmp_path):
    content = idx_bytes(np.zeros((2, 3, 4), dtype=np.uint8))[:10]
    path = write(tmp_path / "header-idx3-ubyte.gz", content)
    with pytest.raises(DataFileError, match=r"header-idx3-ubyte.gz.*truncated IDX dimensions"):
        read_idx(path)


@pytest.mark.parametrize(
    "magic",
    [
        struct.pack(">HBB", 0, 0x0D, 1),  # float32 element type
        struct.pack(">HBB", 1, 0x08, 1),  # non-zero leading bytes
        struct.pack(">HBB", 0, 0x08, 0),  # zero dimensions
    ],
)
def test_read_idx_wrong_magic(tmp_path, magic):
    path = write(tmp_path / "magic-idx1-ubyte.gz", magic + struct.pack(">i", 3) + b"abc")
    with pytest.raises(DataFileError, match=r"magic-idx1-ubyte.gz") as info:
        read_idx(path)
    assert f"0x{magic.hex()}" in str(info.value)


def _truncated_gzip(content: bytes) -> bytes:
    return gzip.compress(content)[:-20]


def _corrupt_gzip(content: bytes) -> bytes:
    data = bytearray(gzip.compress(content))
    data[len(data) // 2] ^= 0xFF
    return bytes(data)


@pytest.mark.parametrize("damage", [_truncated_gzip, _corrupt_gzip, lambda content: content])
def test_read_idx_bad_gzip(tmp_path, damage):
    rng = np.random.default_rng(1)
    content = idx_bytes(rng.integers(0, 256, size=(20, 10, 10), dtype=np.uint8))
    path = tmp_path / "bad-idx3-ubyte.gz"
    path.write_bytes(damage(content))
    with pytest.raises(DataFileError, match=r"bad-idx3-ubyte.gz.*cannot read") as info:
        read_idx(path)
    assert "gzip data is damaged" in str(info.value)


def test_read_idx_missing_file_names_it(tmp_path):
    with pytest.raises(DataFileError, match=r"nothing-here.gz.*FileNotFoundError"):
        read_idx(tmp_path / "nothing-here.gz")
