"""CIFAR-10 (Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny Images"), binary version.

`cifar-10-binary.tar.gz` holds `cifar-10-batches-bin/data_batch_{1..5}.bin` (training) and
`test_batch.bin`: raw records of 3073 bytes, a label byte (0..9) then 3072 pixel bytes, the
red, green and blue 32x32 planes in row-major order (the dataset page's description). No
pickle is read and nothing is extracted: the members are read from the archive, which is checked
by its SHA-256 (TensorFlow Datasets' url_checksums/cifar10.txt; the dataset page lists its
MD5, c32a1d4ab5d03f1284b67883e8d87530). Images are (3, 32, 32); 5,000 training images become
the validation split. Colour intensities: data.binarize must be `none` and the likelihood
Gaussian or discretized logistic.
"""

from __future__ import annotations

import pathlib
import tarfile

import numpy as np

from vi_lab.data.source import Arrays, Checksum, DataFileError, Files, Source

SHAPE = (3, 32, 32)
RECORD_BYTES = 1 + 3 * 32 * 32
MEMBER_DIR = "cifar-10-batches-bin"
MEMBERS = {
    "train": [f"{MEMBER_DIR}/data_batch_{i}.bin" for i in range(1, 6)],
    "test": [f"{MEMBER_DIR}/test_batch.bin"],
}

FILES = Files(
    title="CIFAR-10 binary version",
    folder="cifar-10",
    names={"archive": "cifar-10-binary.tar.gz"},
    checksums={
        "archive": Checksum("sha256", "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd")
    },
    base_url="https://www.cs.toronto.edu/~kriz/",
    how_to_get="the binary version from https://www.cs.toronto.edu/~kriz/cifar.html",
)


def read_records(archive: tarfile.TarFile, member: str, path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file of the archive: images (N, 3, 32, 32) uint8 and labels (N,) int64."""
    try:
        stream = archive.extractfile(member)
    except KeyError:
        raise DataFileError(
            f"{path}: no member {member}: not the CIFAR-10 binary version (cifar-10-binary.tar.gz)?"
        ) from None
    if stream is None:
        raise DataFileError(f"{path}: member {member} is not a regular file.")
    data = np.frombuffer(stream.read(), dtype=np.uint8)
    if data.size == 0 or data.size % RECORD_BYTES:
        raise DataFileError(
            f"{path}: member {member} holds {data.size} bytes, not a whole number of "
            f"{RECORD_BYTES}-byte records (a label byte and 3x32x32 pixels)."
        )
    records = data.reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise DataFileError(f"{path}: member {member} has label {labels.max()}, outside 0..9.")
    return records[:, 1:].reshape(-1, *SHAPE), labels


def read(directory: pathlib.Path) -> Arrays:
    path = directory / FILES.names["archive"]
    images, labels = {}, {}
    try:
        with tarfile.open(path, "r:gz") as archive:
            for split, members in MEMBERS.items():
                parts = [read_records(archive, member, path) for member in members]
                images[split] = np.concatenate([p[0] for p in parts])
                labels[split] = np.concatenate([p[1] for p in parts])
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataFileError(
            f"{path}: cannot read the archive ({type(exc).__name__}: {exc}); delete it and get it again."
        ) from exc
    return Arrays(images, labels)


SOURCE = Source(FILES, read, num_valid=5000)
