"""Omniglot at 28x28 as Burda, Grosse & Salakhutdinov (2016) split it: `chardata.mat` of the IWAE code.

Handwritten characters of 50 alphabets (Lake et al. 2015) downsampled to 28x28: a MATLAB
file whose `data` (784, 24345) and `testdata` (784, 8070) hold one image a column, grey levels
in [0, 1], each image's pixels in MATLAB's column-major order; `target` and `testtarget`
(50, N) give each image's alphabet one-hot. Read with `scipy.io.loadmat`. The validation split
is Burda et al.'s: the training images shuffled by numpy's RandomState(123), the last 1345
of them (IWAE code, datasets.py), so it does not depend on data.seed. Burda et al. binarize
dynamically (data.binarize=dynamic).

No checksum of chardata.mat is published; the reader checks the keys and shapes instead.
"""

from __future__ import annotations

import pathlib

import numpy as np

from vi_lab.data.source import Arrays, DataFileError, Files, Source

SIDE = 28
NUM_VALID = 1345  # Burda et al.'s validation images, from the shuffled training split
SPLIT_SEED = 123
KEYS = {"train": ("data", "target"), "test": ("testdata", "testtarget")}  # images, one-hot alphabets

FILES = Files(
    title="Omniglot 28x28 (Burda et al. 2016)",
    folder="omniglot",
    names={"chardata": "chardata.mat"},
    checksums=None,
    base_url="https://github.com/yburda/iwae/raw/master/datasets/OMNIGLOT/",
)


def _load_mat(path: pathlib.Path) -> dict:
    import scipy.io  # only Omniglot needs scipy; importing it costs half a second

    try:
        return scipy.io.loadmat(path)
    except Exception as exc:  # scipy's parser fails on a damaged file in many ways (IndexError, ...)
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataFileError(
            f"{path}: not a readable MATLAB file ({detail}); delete it and get it again."
        ) from exc


def read(directory: pathlib.Path) -> Arrays:
    path = directory / FILES.names["chardata"]
    mat = _load_mat(path)
    columns, one_hot = {}, {}
    for split, (image_key, label_key) in KEYS.items():
        if image_key not in mat:
            keys = ", ".join(key for key in mat if not key.startswith("__"))
            raise DataFileError(
                f"{path}: no '{image_key}' array (keys: {keys}); is this the chardata.mat of Burda et al.?"
            )
        columns[split] = np.asarray(mat[image_key], dtype=np.float32)
        if columns[split].ndim != 2 or columns[split].shape[0] != SIDE * SIDE:
            raise DataFileError(
                f"{path}: '{image_key}' has shape {columns[split].shape}, expected ({SIDE * SIDE}, N): "
                "one 28x28 image a column."
            )
        one_hot[split] = mat.get(label_key)
    # column-major pixels: image n is column n reshaped in Fortran order (the IWAE code's reshape)
    images = {
        split: cols.T.reshape(-1, SIDE, SIDE).transpose(0, 2, 1)[:, None].copy()
        for split, cols in columns.items()
    }
    labels = {
        split: None if hot is None else np.asarray(hot).argmax(axis=0).astype(np.int64)
        for split, hot in one_hot.items()
    }
    num_train = images["train"].shape[0]
    if num_train <= NUM_VALID:
        raise DataFileError(
            f"{path}: {num_train} training images, not more than the {NUM_VALID} of the validation split."
        )
    order = np.random.RandomState(SPLIT_SEED).permutation(num_train)
    parts = {"train": order[:-NUM_VALID], "valid": order[-NUM_VALID:]}
    train_images, train_labels = images.pop("train"), labels.pop("train")
    for split, rows in parts.items():
        images[split] = train_images[rows]
        labels[split] = None if train_labels is None else train_labels[rows]
    return Arrays(images, labels)


SOURCE = Source(FILES, read)
