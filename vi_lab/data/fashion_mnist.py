"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, arXiv:1708.07747): four IDX files, 60,000 + 10,000 images.

Found in data.path, ``$VI_LAB_DATA/fashion-mnist`` or ``$VI_LAB_DATA`` itself (the layout from
before the lab knew other datasets), the Debian package ``dataset-fashion-mnist``
(/usr/share/datasets/fashion-mnist), then the user cache. The Debian package recompresses the
.gz files, so each file is checked by the MD5 of its decompressed content (Zalando's release).
`find_data_dir`, `download` and `user_cache_dir` are what `make data` calls.
"""

from __future__ import annotations

import os
import pathlib

from vi_lab.data import source
from vi_lab.data.idx import LECUN_FILES, read_lecun
from vi_lab.data.source import Checksum, DataFileError, Files, Source

__all__ = [
    "FILES",
    "SOURCE",
    "DataFileError",
    "download",
    "find_data_dir",
    "user_cache_dir",
]  # DataFileError: the CLI's

SYSTEM_DATA_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")
BASE_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

# MD5 of the decompressed files of the official release (Zalando's README lists the .gz files').
FILES = Files(
    title="Fashion-MNIST",
    folder="fashion-mnist",
    names=LECUN_FILES,
    checksums={
        "train_images": Checksum("md5", "f4a8712d7a061bf5bd6d2ca38dc4d50a", of_content=True),
        "train_labels": Checksum("md5", "9018921c3c673c538a1fc5bad174d6f9", of_content=True),
        "test_images": Checksum("md5", "8181f5470baa50b63fa0f6fddb340f0a", of_content=True),
        "test_labels": Checksum("md5", "15d484375f8d13e6eb1aabb0c3f46965", of_content=True),
    },
    base_url=BASE_URL,
    how_to_get=f"`apt-get update && apt-get install -y dataset-fashion-mnist` (into {SYSTEM_DATA_DIR})",
    system_dir=SYSTEM_DATA_DIR,
    env_folders=("fashion-mnist", ""),
)

SOURCE = Source(FILES, read_lecun, num_valid=5000)


def user_cache_dir() -> pathlib.Path:
    """The per-user download folder: $XDG_CACHE_HOME (default ~/.cache)/vi_lab/fashion-mnist."""
    return source.user_cache_dir(FILES.folder)


def find_data_dir(path: str | None = None) -> pathlib.Path | None:
    """The first folder holding the four files (see the module docstring); None when none does."""
    return source.find(FILES, path)


def download(dest: str | os.PathLike, base_url: str = BASE_URL) -> pathlib.Path:
    """Fetch the four files from `base_url` (http(s):// or file://) into `dest` and verify them."""
    return source.download(FILES, dest, base_url)
