"""Every dataset loaded through `load_data` from tiny files in its real format (tests/data/files.py).

Each test checks that the images and labels come back where they were written (orientation,
channel order, split), and that a damaged or wrong file is one line naming it.
"""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from tests.data.files import (
    accept,
    amat_text,
    cifar_batches,
    lecun_arrays,
    write_binarized_mnist,
    write_chardata,
    write_cifar_archive,
    write_lecun,
)
from vi_lab.config import Binarize, ConfigError, DataConfig, Dataset
from vi_lab.data import omniglot
from vi_lab.data.datasets import load_data
from vi_lab.data.source import DataFileError

CPU = torch.device("cpu")


def one_line(info: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(info.value)
    return str(info.value)


# mnist ------------------------------------------------------------------------------------------


def test_mnist_idx_files(tmp_path, monkeypatch):
    arrays = lecun_arrays(num_train=6, num_test=3)
    directory = write_lecun(tmp_path / "mnist", arrays)
    accept(monkeypatch, Dataset.mnist, directory, num_valid=2)
    data = load_data(DataConfig(name=Dataset.mnist, path=str(directory), binarize=Binarize.none), CPU)
    assert data.image_shape == (1, 4, 4)
    assert [data.x[s].shape[0] for s in ("train", "valid", "test")] == [4, 2, 3]
    expected_test = torch.from_numpy(arrays["test_images"]).flatten(1).float() / 255
    assert torch.equal(data.x["test"], expected_test)
    # train and valid are a partition of the 6 training images, labels kept with their image
    fit = torch.cat([data.x["train"], data.x["valid"]])
    fit_labels = torch.cat([data.labels["train"], data.labels["valid"]])
    written = torch.from_numpy(arrays["train_images"]).flatten(1).float() / 255
    for image, label in zip(fit, fit_labels, strict=True):
        (row,) = torch.nonzero((written == image).all(1)).flatten().tolist()
        assert label.item() == arrays["train_labels"][row]


def test_mnist_checksum_mismatch_and_missing_file(tmp_path, monkeypatch):
    directory = write_lecun(tmp_path / "mnist", lecun_arrays())
    accept(monkeypatch, Dataset.mnist, directory, num_valid=2)
    other = lecun_arrays(seed=1)["train_labels"]
    (directory / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(other.tobytes()))
    with pytest.raises(DataFileError) as info:
        load_data(DataConfig(name=Dataset.mnist, path=str(directory)), CPU)
    message = one_line(info)
    assert "train-labels-idx1-ubyte.gz: SHA256 is" in message and "not the official MNIST release" in message
    (directory / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataFileError) as info:
        load_data(DataConfig(name=Dataset.mnist), CPU)
    message = one_line(info)
    assert "MNIST files (train-images-idx3-ubyte.gz" in message and "$VI_LAB_DATA/mnist: not set" in message
    assert "user cache:" in message and "data.download=true fetches them from https://" in message


# binarized_mnist --------------------------------------------------------------------------------


def binary_images(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, size=(n, 28, 28), dtype=np.uint8)


def test_binarized_mnist_amat_files(tmp_path, monkeypatch):
    images = {"train": binary_images(0, 3), "valid": binary_images(1, 2), "test": binary_images(2, 2)}
    directory = write_binarized_mnist(tmp_path / "bm", images)
    accept(monkeypatch, Dataset.binarized_mnist, directory)
    data = load_data(DataConfig(name=Dataset.binarized_mnist, path=str(directory)), CPU)
    for split, written in images.items():  # the given splits, in file order
        assert torch.equal(data.x[split], torch.from_numpy(written).flatten(1).float())
    assert data.labels["train"] is None and data.image_shape == (1, 28, 28)
    assert data.binarization == {"train": "files", "eval": "files"}


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda text: text[: len(text) // 2], "has 392 values, expected 784"),
        (lambda text: text.replace(b"1", b"2", 1), "not 0, 1 or whitespace"),
    ],
)
def test_binarized_mnist_damaged_amat(tmp_path, monkeypatch, damage, problem):
    images = {"train": binary_images(0, 1), "valid": binary_images(1, 1), "test": binary_images(2, 1)}
    directory = write_binarized_mnist(tmp_path / "bm", images)
    path = directory / "binarized_mnist_test.amat"
    path.write_bytes(damage(amat_text(images["test"])))
    accept(
        monkeypatch, Dataset.binarized_mnist, directory
    )  # checksums of the damaged files: the reader decides
    with pytest.raises(DataFileError, match=problem) as info:
        load_data(DataConfig(name=Dataset.binarized_mnist, path=str(directory)), CPU)
    assert str(path) in one_line(info)


# omniglot ---------------------------------------------------------------------------------------


def test_omniglot_chardata_mat(tmp_path, monkeypatch):
    monkeypatch.setattr(omniglot, "NUM_VALID", 2)
    rng = np.random.default_rng(0)
    train, test = rng.random((5, 28, 28)), rng.random((3, 28, 28))
    train[0] = 0.0
    train[0, 0, 5] = 1.0  # one lit pixel in row 0, column 5: a transposed reader would put it in row 5
    write_chardata(tmp_path / "omniglot" / "chardata.mat", train, test)
    data = load_data(
        DataConfig(name=Dataset.omniglot, path=str(tmp_path / "omniglot"), binarize=Binarize.none), CPU
    )
    assert torch.allclose(data.x["test"], torch.from_numpy(test).flatten(1).float())
    assert data.labels["test"].tolist() == [0, 1, 2]  # image i is alphabet i in the written one-hot
    # Burda et al.'s split: RandomState(123) shuffles the training images, the last NUM_VALID validate
    order = np.random.RandomState(123).permutation(5)
    assert torch.allclose(data.x["valid"], torch.from_numpy(train[order[-2:]]).flatten(1).float())
    assert torch.allclose(data.x["train"], torch.from_numpy(train[order[:-2]]).flatten(1).float())
    fit = torch.cat([data.x["train"], data.x["valid"]])  # in the order train[order]
    first = fit[int(np.flatnonzero(order == 0)[0])].view(28, 28)
    assert first[0, 5] == 1.0 and first.sum() == 1.0 and data.image_shape == (1, 28, 28)


def test_omniglot_wrong_container(tmp_path):
    import scipy.io

    directory = tmp_path / "omniglot"
    directory.mkdir()
    scipy.io.savemat(directory / "chardata.mat", {"images": np.zeros((784, 2))})
    with pytest.raises(DataFileError, match=r"no 'data' array \(keys: images\)") as info:
        load_data(DataConfig(name=Dataset.omniglot, path=str(directory)), CPU)
    one_line(info)
    (directory / "chardata.mat").write_bytes(b"not a MATLAB file at all")
    with pytest.raises(DataFileError, match="not a readable MATLAB file") as info:
        load_data(DataConfig(name=Dataset.omniglot, path=str(directory)), CPU)
    one_line(info)


# cifar10 ----------------------------------------------------------------------------------------


def test_cifar10_binary_archive(tmp_path, monkeypatch):
    members, images, labels = cifar_batches(per_batch=2)
    write_cifar_archive(tmp_path / "cifar" / "cifar-10-binary.tar.gz", members)
    accept(monkeypatch, Dataset.cifar10, tmp_path / "cifar", num_valid=3)
    config = DataConfig(name=Dataset.cifar10, path=str(tmp_path / "cifar"), binarize=Binarize.none)
    data = load_data(config, CPU)
    assert data.image_shape == (3, 32, 32) and data.data_dim == 3072
    expected = torch.from_numpy(images).flatten(1).float() / 255  # (C, H, W) flattened: R plane first
    assert torch.equal(data.x["test"], expected[10:])
    assert data.labels["test"].tolist() == labels[10:].tolist()
    fit = torch.cat([data.x["train"], data.x["valid"]])
    assert sorted(fit.sum(1).tolist()) == sorted(expected[:10].sum(1).tolist())


def test_cifar10_missing_member_and_checksum(tmp_path, monkeypatch):
    members, _, _ = cifar_batches(per_batch=1)
    del members["data_batch_3.bin"]
    archive = tmp_path / "cifar" / "cifar-10-binary.tar.gz"
    write_cifar_archive(archive, members)
    accept(monkeypatch, Dataset.cifar10, tmp_path / "cifar", num_valid=1)
    config = DataConfig(name=Dataset.cifar10, path=str(tmp_path / "cifar"), binarize=Binarize.none)
    with pytest.raises(DataFileError, match=r"no member cifar-10-batches-bin/data_batch_3\.bin") as info:
        load_data(config, CPU)
    one_line(info)
    archive.write_bytes(archive.read_bytes() + b"\0")  # the checksum of the accepted archive no longer holds
    with pytest.raises(DataFileError, match=r"cifar-10-binary\.tar\.gz: SHA256 is") as info:
        load_data(config, CPU)
    one_line(info)


# npz --------------------------------------------------------------------------------------------


def test_npz_images_labels_and_vectors(tmp_path):
    rng = np.random.default_rng(0)
    splits = {
        s: rng.integers(0, 256, size=(n, 2, 8, 4), dtype=np.uint8)
        for s, n in [("train", 5), ("valid", 2), ("test", 3)]
    }
    path = tmp_path / "mine.npz"
    np.savez(path, **splits, train_labels=np.arange(5), valid_labels=np.arange(2), test_labels=np.arange(3))
    data = load_data(DataConfig(name=Dataset.npz, path=str(path), binarize=Binarize.none), CPU)
    assert data.image_shape == (2, 8, 4)
    for split, written in splits.items():
        assert torch.equal(data.x[split], torch.from_numpy(written).flatten(1).float() / 255)
    assert data.labels["train"].tolist() == [0, 1, 2, 3, 4]
    assert load_data(DataConfig(name=Dataset.npz, path=str(path), classes=[1]), CPU).x["train"].shape[0] == 1

    vectors = tmp_path / "vectors.npz"
    np.savez(
        vectors, train=rng.normal(size=(4, 6)), valid=rng.normal(size=(2, 6)), test=rng.normal(size=(2, 6))
    )
    data = load_data(DataConfig(name=Dataset.npz, path=str(vectors), binarize=Binarize.none), CPU)
    assert data.image_shape is None and data.labels["train"] is None and data.data_dim == 6
    with pytest.raises(DataFileError, match=r"needs pixel values in \[0, 1\]") as info:
        load_data(DataConfig(name=Dataset.npz, path=str(vectors)), CPU)  # the default threshold binarization
    one_line(info)
    with pytest.raises(ConfigError, match=r"data\.classes: npz has no labels"):
        load_data(DataConfig(name=Dataset.npz, path=str(vectors), binarize=Binarize.none, classes=[0]), CPU)


@pytest.mark.parametrize(
    ("arrays", "problem"),
    [
        ({"train": np.zeros((2, 3)), "test": np.zeros((2, 3))}, "no array valid"),
        (
            {"train": np.zeros((2, 3)), "valid": np.zeros((2, 4)), "test": np.zeros((2, 3))},
            "'valid' has shape",
        ),
        (
            {
                "train": np.zeros((2, 3)),
                "valid": np.zeros((1, 3)),
                "test": np.zeros((2, 3)),
                "test_labels": [1],
            },
            "'test_labels' has shape",
        ),
    ],
)
def test_npz_bad_arrays(tmp_path, arrays, problem):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataFileError, match=problem) as info:
        load_data(DataConfig(name=Dataset.npz, path=str(tmp_path / "bad.npz"), binarize=Binarize.none), CPU)
    assert str(tmp_path / "bad.npz") in one_line(info)


def test_npz_missing_file(tmp_path):
    with pytest.raises(DataFileError, match="no such file") as info:
        load_data(DataConfig(name=Dataset.npz, path=str(tmp_path / "absent.npz")), CPU)
    one_line(info)
