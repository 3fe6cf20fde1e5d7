"""Tests for vi_lab.data.fashion_mnist: IDX parsing, MD5 checks, directory search and download.

Everything runs on tiny fake datasets written to tmp_path; only test_real_data reads the
Debian-packaged files (`make data` installs them).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pathlib
import struct

import numpy as np
import pytest

from vi_lab.data import fashion_mnist as fm

REAL_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array in IDX format."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write(path: pathlib.Path, content: bytes) -> pathlib.Path:
    path.write_bytes(gzip.compress(content) if path.suffix == ".gz" else content)
    return path


def fake_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, size=5, dtype=np.uint8),
        "test_images": rng.integers(0, 256, size=(2, 4, 3), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, size=2, dtype=np.uint8),
    }


@pytest.fixture(autouse=True)
def isolated_locations(tmp_path_factory, monkeypatch):
    """Point the system dir, user cache and $VI_LAB_DATA away from this machine's real files."""
    root = tmp_path_factory.mktemp("locations")
    monkeypatch.setattr(fm, "SYSTEM_DATA_DIR", root / "system")
    monkeypatch.setenv("XDG_CACHE_HOME", str(root / "cache"))
    monkeypatch.delenv(fm.ENV_VAR, raising=False)
    return root


@pytest.fixture
def fake_dataset(tmp_path, monkeypatch):
    """A directory with the four files holding fake_arrays(), and the MD5 table patched to match."""
    directory = tmp_path / "fake"
    directory.mkdir()
    arrays = fake_arrays()
    md5 = {}
    for key, name in fm.FILES.items():
        content = idx_bytes(arrays[key])
        write(directory / name, content)
        md5[key] = hashlib.md5(content).hexdigest()
    monkeypatch.setattr(fm, "MD5", md5)
    return directory, arrays


# read_idx ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["images-idx3-ubyte.gz", "images-idx3-ubyte"])
def test_read_idx_round_trips_images(tmp_path, name):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 7
    result = fm.read_idx(write(tmp_path / name, idx_bytes(images)))
    assert result.dtype == np.uint8
    assert result.shape == (2, 3, 4)
    np.testing.assert_array_equal(result, images)


@pytest.mark.parametrize("name", ["labels-idx1-ubyte.gz", "labels-idx1-ubyte"])
def test_read_idx_round_trips_labels(tmp_path, name):
    labels = np.array([9, 0, 3, 3, 7], dtype=np.uint8)
    result = fm.read_idx(str(write(tmp_path / name, idx_bytes(labels))))
    assert result.dtype == np.uint8
    assert result.shape == (5,)
    np.testing.assert_array_equal(result, labels)


def test_read_idx_truncated_payload(tmp_path):
    content = idx_bytes(np.zeros((2, 3, 4), dtype=np.uint8))[:-5]
    path = write(tmp_path / "short-idx3-ubyte.gz", content)
    with pytest.raises(fm.DataFileError, match=r"short-idx3-ubyte.gz") as info:
        fm.read_idx(path)
    assert "24 data bytes were expected" in str(info.value)
    assert "19 were found" in str(info.value)
    assert "truncated" in str(info.value)


def test_read_idx_trailing_bytes(tmp_path):
    content = idx_bytes(np.zeros(4, dtype=np.uint8)) + b"xyz"
    path = write(tmp_path / "long-idx1-ubyte", content)
    with pytest.raises(fm.DataFileError, match=r"long-idx1-ubyte") as info:
        fm.read_idx(path)
    assert "4 data bytes were expected" in str(info.value)
    assert "7 were found" in str(info.value)
    assert "trailing bytes" in str(info.value)


def test_read_idx_truncated_header(tmp_path):
    content = idx_bytes(np.zeros((2, 3, 4), dtype=np.uint8))[:10]
    path = write(tmp_path / "header-idx3-ubyte.gz", content)
    with pytest.raises(fm.DataFileError, match=r"header-idx3-ubyte.gz.*truncated IDX dimensions"):
        fm.read_idx(path)


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
    with pytest.raises(fm.DataFileError, match=r"magic-idx1-ubyte.gz") as info:
        fm.read_idx(path)
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
    with pytest.raises(fm.DataFileError, match=r"bad-idx3-ubyte.gz.*cannot read") as info:
        fm.read_idx(path)
    assert "gzip data is damaged" in str(info.value)


def test_read_idx_missing_file_names_it(tmp_path):
    with pytest.raises(fm.DataFileError, match=r"nothing-here.gz.*FileNotFoundError"):
        fm.read_idx(tmp_path / "nothing-here.gz")


# load -------------------------------------------------------------------------------------------


def test_load_fake_dataset(fake_dataset):
    directory, arrays = fake_dataset
    result = fm.load(str(directory))
    assert set(result) == set(fm.FILES)
    for key, expected in arrays.items():
        assert result[key].dtype == np.uint8
        np.testing.assert_array_equal(result[key], expected)


def test_load_detects_altered_byte(fake_dataset):
    directory, arrays = fake_dataset
    content = bytearray(idx_bytes(arrays["test_images"]))
    content[-1] ^= 0x01  # still a well-formed IDX file, so only the MD5 can catch it
    write(directory / fm.FILES["test_images"], bytes(content))
    with pytest.raises(fm.DataFileError, match=r"MD5") as info:
        fm.load(str(directory))
    message = str(info.value)
    assert "t10k-images-idx3-ubyte.gz" in message
    assert fm.MD5["test_images"] in message
    assert hashlib.md5(bytes(content)).hexdigest() in message
    assert "download" in message


def test_load_missing_file_names_it(fake_dataset):
    directory, _ = fake_dataset
    (directory / fm.FILES["train_labels"]).unlink()
    with pytest.raises(fm.DataFileError) as info:
        fm.load(str(directory))
    message = str(info.value)
    assert message.split("missing ")[1].split(". ")[0] == "train-labels-idx1-ubyte.gz"
    assert "apt-get install -y dataset-fashion-mnist" in message


def test_load_nothing_found_says_where_it_looked(isolated_locations):
    with pytest.raises(fm.DataFileError) as info:
        fm.load()
    message = str(info.value)
    assert f"${fm.ENV_VAR}: not set" in message
    assert str(fm.SYSTEM_DATA_DIR) in message
    assert str(isolated_locations / "cache" / "vi_lab" / "fashion-mnist") in message
    assert "apt-get install -y dataset-fashion-mnist" in message
    assert "data.download=true" in message


def test_load_uses_env_var(fake_dataset, monkeypatch):
    directory, arrays = fake_dataset
    monkeypatch.setenv(fm.ENV_VAR, str(directory))
    np.testing.assert_array_equal(fm.load()["train_labels"], arrays["train_labels"])


def test_load_downloads_into_cache_when_asked(fake_dataset, isolated_locations, monkeypatch):
    directory, arrays = fake_dataset
    monkeypatch.setattr(fm, "BASE_URL", directory.as_uri())
    result = fm.load(download_if_missing=True)
    np.testing.assert_array_equal(result["train_images"], arrays["train_images"])
    cache = isolated_locations / "cache" / "vi_lab" / "fashion-mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(fm.FILES.values())


# find_data_dir ----------------------------------------------------------------------------------


def _complete_dir(path: pathlib.Path) -> pathlib.Path:
    path.mkdir(parents=True)
    for name in fm.FILES.values():
        (path / name).write_bytes(b"")
    return path


def test_find_data_dir_search_order(tmp_path, isolated_locations, monkeypatch):
    assert fm.find_data_dir() is None
    cache = _complete_dir(isolated_locations / "cache" / "vi_lab" / "fashion-mnist")
    assert fm.find_data_dir() == cache
    system = _complete_dir(fm.SYSTEM_DATA_DIR)
    assert fm.find_data_dir() == system
    env = _complete_dir(tmp_path / "env")
    monkeypatch.setenv(fm.ENV_VAR, str(env))
    assert fm.find_data_dir() == env
    explicit = _complete_dir(tmp_path / "explicit")
    assert fm.find_data_dir(str(explicit)) == explicit


def test_find_data_dir_skips_incomplete_env_dir(tmp_path, monkeypatch):
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    (incomplete / fm.FILES["test_labels"]).write_bytes(b"")
    monkeypatch.setenv(fm.ENV_VAR, str(incomplete))
    system = _complete_dir(fm.SYSTEM_DATA_DIR)
    assert fm.find_data_dir() == system


def test_find_data_dir_explicit_incomplete_is_an_error(tmp_path):
    _complete_dir(fm.SYSTEM_DATA_DIR)  # would be found if the explicit path fell through
    explicit = tmp_path / "explicit"
    explicit.mkdir()
    (explicit / fm.FILES["train_images"]).write_bytes(b"")
    with pytest.raises(fm.DataFileError) as info:
        fm.find_data_dir(str(explicit))
    message = str(info.value)
    assert str(explicit) in message
    missing = message.split("missing ")[1].split(". ")[0]
    assert missing.split(", ") == [
        fm.FILES["train_labels"],
        fm.FILES["test_images"],
        fm.FILES["test_labels"],
    ]


# download ---------------------------------------------------------------------------------------


def test_download_from_file_url(fake_dataset, tmp_path):
    source, _ = fake_dataset
    dest = tmp_path / "new" / "dir"
    assert fm.download(dest, base_url=source.as_uri() + "/") == dest
    assert sorted(os.listdir(dest)) == sorted(fm.FILES.values())  # no leftover temporary files
    for name in fm.FILES.values():
        assert (dest / name).read_bytes() == (source / name).read_bytes()


def test_download_verifies_md5(fake_dataset, tmp_path, monkeypatch):
    source, _ = fake_dataset
    monkeypatch.setitem(fm.MD5, "train_labels", "0" * 32)
    with pytest.raises(fm.DataFileError, match=r"train-labels-idx1-ubyte.gz.*MD5"):
        fm.download(tmp_path / "dest", base_url=source.as_uri())


def test_download_failure_is_a_data_file_error(tmp_path):
    dest = tmp_path / "dest"
    with pytest.raises(fm.DataFileError, match=r"Downloading .*train-images-idx3-ubyte.gz failed") as info:
        fm.download(dest, base_url=(tmp_path / "no-such-mirror").as_uri())
    assert "apt-get install -y dataset-fashion-mnist" in str(info.value)
    assert os.listdir(dest) == []  # the temporary file was removed


# real data --------------------------------------------------------------------------------------


def test_real_data():
    assert REAL_DIR.is_dir(), f"{REAL_DIR} is absent: run `make data` (apt-get install dataset-fashion-mnist)"
    for key, name in fm.FILES.items():  # the MD5 table matches the installed files
        digest = hashlib.md5()
        with gzip.open(REAL_DIR / name) as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
        assert digest.hexdigest() == fm.MD5[key], name
    data = fm.load(str(REAL_DIR))
    assert data["train_images"].shape == (60000, 28, 28)
    assert data["train_labels"].shape == (60000,)
    assert data["test_images"].shape == (10000, 28, 28)
    assert data["test_labels"].shape == (10000,)
    assert all(array.dtype == np.uint8 for array in data.values())
    np.testing.assert_array_equal(np.bincount(data["train_labels"], minlength=10), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(data["test_labels"], minlength=10), np.full(10, 1000))
    assert data["train_images"].max() == 255
