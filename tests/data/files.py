"""Tiny files in each dataset's real format, and sources patched to find and accept them.

The writers produce what the official files are (IDX in gzip, .amat text, a MATLAB v5 file
with chardata.mat's keys, a gzip tar of CIFAR-10's binary records, numpy's .npz), only with a
few images; `accept` points a source's checksums at the written files (as the official table
points at the official ones), so loading runs the same find/verify/read path.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import pathlib
import struct
import tarfile

import numpy as np
import pytest

from vi_lab.config import Dataset
from vi_lab.data import datasets
from vi_lab.data.idx import LECUN_FILES
from vi_lab.data.source import Checksum


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array in IDX format."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_lecun(directory: pathlib.Path, arrays: dict[str, np.ndarray]) -> pathlib.Path:
    """The four gzip-compressed IDX files of MNIST/Fashion-MNIST holding `arrays` (keyed like LECUN_FILES)."""
    directory.mkdir(parents=True, exist_ok=True)
    for key, name in LECUN_FILES.items():
        (directory / name).write_bytes(gzip.compress(idx_bytes(arrays[key])))
    return directory


def lecun_arrays(
    seed: int = 0, num_train: int = 6, num_test: int = 3, side: int = 4
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, size=(num_train, side, side), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, size=num_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, size=(num_test, side, side), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, size=num_test, dtype=np.uint8),
    }


def amat_text(images: np.ndarray) -> bytes:
    """Larochelle's .amat layout: one image a line, its 0/1 values separated by single spaces."""
    return b"".join(b" ".join(b"%d" % v for v in row) + b"\n" for row in images.reshape(len(images), -1))


def write_binarized_mnist(directory: pathlib.Path, images: dict[str, np.ndarray]) -> pathlib.Path:
    directory.mkdir(parents=True, exist_ok=True)
    for split, array in images.items():
        (directory / f"binarized_mnist_{split}.amat").write_bytes(amat_text(array))
    return directory


def write_chardata(path: pathlib.Path, train: np.ndarray, test: np.ndarray, num_alphabets: int = 50) -> None:
    """A chardata.mat like Burda et al.'s: one 28x28 image a column in MATLAB's column-major order."""
    import scipy.io

    def columns(images: np.ndarray) -> np.ndarray:
        return images.transpose(0, 2, 1).reshape(len(images), -1).T.astype(np.float64)  # (784, N)

    def one_hot(n: int) -> np.ndarray:
        return np.eye(num_alphabets)[:, np.arange(n) % num_alphabets]  # (50, N): image i is alphabet i % 50

    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(
        path,
        {"data": columns(train), "testdata": columns(test), "target": one_hot(len(train)),
         "testtarget": one_hot(len(test))},
    )  # fmt: skip


def cifar_records(images: np.ndarray, labels: np.ndarray) -> bytes:
    """CIFAR-10 binary records: a label byte, then the 3x32x32 pixels (R, G, B planes, row-major)."""
    return b"".join(bytes([label]) + image.tobytes() for image, label in zip(images, labels, strict=True))


def write_cifar_archive(path: pathlib.Path, batches: dict[str, bytes]) -> None:
    """cifar-10-binary.tar.gz with the given members (names under cifar-10-batches-bin/)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for name, content in batches.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))


def cifar_batches(seed: int = 0, per_batch: int = 2) -> tuple[dict[str, bytes], np.ndarray, np.ndarray]:
    """Members of a tiny archive, and the training and test images in their order."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(6 * per_batch, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, size=6 * per_batch, dtype=np.uint8)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    members = {
        name: cifar_records(
            images[i * per_batch : (i + 1) * per_batch], labels[i * per_batch : (i + 1) * per_batch]
        )
        for i, name in enumerate(names)
    }
    members["batches.meta.txt"] = b"airplane\nautomobile\n"
    return members, images, labels


def accept(monkeypatch: pytest.MonkeyPatch, name: Dataset, directory: pathlib.Path, **source_fields) -> None:
    """Make `name`'s source take the files in `directory` as official (their SHA-256s) and `source_fields`."""
    source = datasets.SOURCES[name]
    checksums = {
        key: Checksum("sha256", hashlib.sha256((directory / file).read_bytes()).hexdigest())
        for key, file in source.files.names.items()
    }
    files = dataclasses.replace(source.files, checksums=checksums)
    monkeypatch.setitem(datasets.SOURCES, name, dataclasses.replace(source, files=files, **source_fields))
