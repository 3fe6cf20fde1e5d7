"""Fashion-MNIST's files: what `make data` calls (find_data_dir, download), the old $VI_LAB_DATA layout,
the MD5 of the decompressed content, and the real files of the Debian package."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import pathlib

import numpy as np
import pytest

from tests.data.files import lecun_arrays, write_lecun
from vi_lab.data import fashion_mnist as fm
from vi_lab.data.idx import read_lecun
from vi_lab.data.source import Checksum, DataFileError, verify

REAL_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def files(tmp_path, monkeypatch):
    """Fashion-MNIST's FILES with the system folder moved away and the tiny files' MD5s as official."""
    directory = write_lecun(tmp_path / "fake", lecun_arrays())
    checksums = {
        key: Checksum("md5", hashlib.md5(gzip.decompress((directory / name).read_bytes())).hexdigest(), True)
        for key, name in fm.FILES.names.items()
    }
    patched = dataclasses.replace(fm.FILES, system_dir=tmp_path / "system", checksums=checksums)
    monkeypatch.setattr(fm, "FILES", patched)
    return directory


def test_find_data_dir_looks_in_the_old_flat_vi_lab_data_after_its_subfolder(files, tmp_path, monkeypatch):
    assert fm.find_data_dir() is None
    monkeypatch.setenv("VI_LAB_DATA", str(files))  # the files right in $VI_LAB_DATA, as before
    assert fm.find_data_dir() == files
    sub = write_lecun(files / "fashion-mnist", lecun_arrays())
    assert fm.find_data_dir() == sub


def test_make_data_download_into_the_user_cache(files, isolated_locations):
    dest = fm.download(fm.user_cache_dir(), base_url=files.as_uri())
    assert dest == isolated_locations / "cache" / "vi_lab" / "fashion-mnist"
    assert fm.find_data_dir() == dest
    assert sorted(os.listdir(dest)) == sorted(fm.FILES.names.values())


def test_recompressed_files_pass_an_altered_byte_does_not(files):
    name = fm.FILES.names["test_images"]
    content = gzip.decompress((files / name).read_bytes())
    (files / name).write_bytes(
        gzip.compress(content, compresslevel=1, mtime=7)
    )  # other .gz bytes, same content
    verify(fm.FILES, files)
    altered = bytearray(content)
    altered[-1] ^= 0x01  # still a well-formed IDX file: only the MD5 can catch it
    (files / name).write_bytes(gzip.compress(bytes(altered)))
    with pytest.raises(DataFileError, match="MD5 of the decompressed content is") as info:
        verify(fm.FILES, files)
    assert hashlib.md5(bytes(altered)).hexdigest() in str(info.value)
    assert "apt-get install -y dataset-fashion-mnist" in str(info.value)


def test_real_data():
    assert REAL_DIR.is_dir(), f"{REAL_DIR} is absent: run `make data` (apt-get install dataset-fashion-mnist)"
    assert fm.find_data_dir() == REAL_DIR
    verify(fm.FILES, REAL_DIR)  # the MD5 table matches the installed files
    arrays = read_lecun(REAL_DIR)
    assert arrays.images["train"].shape == (60000, 1, 28, 28) and arrays.images["test"].shape == (
        10000,
        1,
        28,
        28,
    )
    assert all(array.dtype == np.uint8 for array in arrays.images.values())
    np.testing.assert_array_equal(np.bincount(arrays.labels["train"], minlength=10), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(arrays.labels["test"], minlength=10), np.full(10, 1000))
    assert arrays.images["train"].max() == 255
