"""A researcher's own arrays: one .npz file (numpy.savez) named by data.path, no code needed.

Keys: `train`, `valid` and `test`, each of shape (N, P) (vectors: MLP networks only),
(N, H, W) (single-channel images) or (N, C, H, W) (channels first), the same per-example shape
in the three; and, optionally, `train_labels`, `valid_labels`, `test_labels` (N,) integer class
ids (for data.classes). uint8 arrays are intensities 0..255 (scaled to [0, 1]); bool arrays are
0/1; any other numeric array is used as it is (binarizing needs values in [0, 1]). The file
is the user's: it has no checksum and no download.
"""

from __future__ import annotations

import pathlib
import zipfile

import numpy as np

from vi_lab.data.source import Arrays, DataFileError, Source, read_error

SPLITS = ("train", "valid", "test")


def _image_array(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if array.dtype == np.uint8:
        return array
    return array.astype(np.float32)


def read(path: pathlib.Path) -> Arrays:
    """The arrays of the .npz file at `path` (see the module docstring for the keys and shapes)."""
    if not path.is_file():
        raise DataFileError(
            f"data.path={path}: no such file; data.name=npz reads the user's own .npz file "
            "(docs/datasets.md)."
        )
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise DataFileError(f"{path}: a single array, not an .npz archive of named arrays (numpy.savez).")
        with loaded as archive:
            content = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise read_error(path, exc) from exc
    absent = [key for key in SPLITS if key not in content]
    if absent:
        raise DataFileError(
            f"{path}: no array {', '.join(absent)} (keys: {', '.join(sorted(content)) or 'none'}); "
            "data.name=npz needs train, valid and test (docs/datasets.md)."
        )
    images = {split: _image_array(content[split]) for split in SPLITS}
    shape = images["train"].shape[1:]
    for split, array in images.items():
        if (
            not np.issubdtype(array.dtype, np.number)
            or array.ndim not in (2, 3, 4)
            or array.shape[1:] != shape
        ):
            raise DataFileError(
                f"{path}: '{split}' has shape {array.shape} and dtype {content[split].dtype}; every split "
                "needs a numeric array (N, P), (N, H, W) or (N, C, H, W) with the shape per example of "
                f"'train', {shape}."
            )
    labels: dict[str, np.ndarray | None] = {}
    for split in SPLITS:
        found = content.get(f"{split}_labels")
        if found is not None and (
            found.shape != (images[split].shape[0],) or not np.issubdtype(found.dtype, np.integer)
        ):
            raise DataFileError(
                f"{path}: '{split}_labels' has shape {found.shape} and dtype {found.dtype}, expected "
                f"({images[split].shape[0]},) integers: one class id per '{split}' example."
            )
        labels[split] = None if found is None else found.astype(np.int64)
    for split, array in images.items():
        if array.ndim == 3:
            images[split] = array[:, None]
    return Arrays(images, labels)


SOURCE = Source(None, read)
