"""Binarized MNIST of Larochelle & Murray (2011): MNIST binarized once, split 50,000/10,000/10,000.

The fixed stochastic binarization of Salakhutdinov & Murray (2008), in the form Larochelle &
Murray distributed with "The Neural Autoregressive Distribution Estimator" (AISTATS 2011):
the usual log-likelihood benchmark (Burda et al. 2016 report on it too). Three text files
`binarized_mnist_{train,valid,test}.amat`, one image a line: 784 values 0 or 1 separated by
single spaces. The pixels are fixed by the files, so data.binarize may only be `threshold` (a
no-op on 0/1) or `none`. Each file is checked by its SHA-256 (TensorFlow Datasets'
url_checksums/binarized_mnist.txt). No labels.
"""

from __future__ import annotations

import pathlib

import numpy as np

from vi_lab.data.source import Arrays, Checksum, DataFileError, Files, Source, read_error

NUM_PIXELS = 784
SPLITS = {"train": "train", "valid": "valid", "test": "test"}

FILES = Files(
    title="binarized MNIST (Larochelle & Murray 2011)",
    folder="binarized-mnist",
    names={split: f"binarized_mnist_{name}.amat" for split, name in SPLITS.items()},
    checksums={
        "train": Checksum("sha256", "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d"),
        "valid": Checksum("sha256", "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2"),
        "test": Checksum("sha256", "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c"),
    },
    base_url="http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/",
)

_ZERO, _ONE = ord("0"), ord("1")
_SEPARATORS = np.frombuffer(b" \t\r\n", dtype=np.uint8)


def read_amat(path: pathlib.Path, num_values: int = NUM_PIXELS) -> np.ndarray:
    """A binary .amat file as uint8 (N, num_values): one row a line, values 0/1 between whitespace."""
    try:
        text = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    except OSError as exc:
        raise read_error(path, exc) from exc
    is_value = (text == _ZERO) | (text == _ONE)
    stray = ~is_value & ~np.isin(text, _SEPARATORS)
    if stray.any():
        at = int(np.flatnonzero(stray)[0])
        raise DataFileError(
            f"{path}: byte {at} is {bytes(text[at : at + 1])!r}, not 0, 1 or whitespace: "
            "not a binarized .amat file."
        )
    ends = np.flatnonzero(text == ord("\n"))
    if text.size and text[-1] != ord("\n"):
        ends = np.append(ends, text.size - 1)  # a last line without its newline
    per_line = np.diff(np.concatenate([[0], np.cumsum(is_value)[ends]]))  # values on each line
    per_line = per_line[per_line > 0]  # blank lines hold no image
    wrong = np.flatnonzero(per_line != num_values)
    if wrong.size:
        raise DataFileError(
            f"{path}: image {int(wrong[0])} has {int(per_line[wrong[0]])} values, expected {num_values} "
            "(a truncated or altered file?); delete it and get it again."
        )
    return (text[is_value] - _ZERO).reshape(-1, num_values)


def read(directory: pathlib.Path) -> Arrays:
    images = {
        split: read_amat(directory / FILES.names[split]).reshape(-1, 1, 28, 28).astype(np.float32)
        for split in SPLITS
    }
    return Arrays(images, dict.fromkeys(SPLITS))


SOURCE = Source(FILES, read, binary=True)
