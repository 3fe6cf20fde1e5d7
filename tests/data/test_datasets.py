"""Datasets and batches: splits, binarization, indices, determinism."""

from __future__ import annotations

import torch

from vi_lab.config import Binarize, DataConfig, Dataset
from vi_lab.data.datasets import batches, epoch_generator, load_data
from vi_lab.models.linear_gaussian import LinearGaussianDecoder

CPU = torch.device("cpu")


def test_batches_carry_their_rows_and_cover_the_split_once():
    x = torch.arange(23.0)[:, None].repeat(1, 3)
    seen = []
    for xb, idx in batches(x, 5, epoch_generator(0, 0, CPU)):
        assert torch.equal(xb, x[idx])
        seen.append(idx)
    assert sorted(torch.cat(seen).tolist()) == list(range(23))
    # resuming at batch 2 of the same epoch yields the remaining batches, same order
    rest = [idx for _, idx in batches(x, 5, epoch_generator(0, 0, CPU), start=2)]
    assert all(torch.equal(a, b) for a, b in zip(rest, seen[2:], strict=True))


def test_linear_gaussian_data_is_seeded_and_split():
    config = DataConfig(name=Dataset.linear_gaussian, binarize=Binarize.none)
    a, b = load_data(config, CPU), load_data(config, CPU)
    assert torch.equal(a.x["train"], b.x["train"])
    assert [a.x[s].shape[0] for s in ("train", "valid", "test")] == [5500, 500, 1000]
    other = load_data(DataConfig(name=Dataset.linear_gaussian, binarize=Binarize.none, seed=1), CPU)
    assert not torch.equal(a.x["train"], other.x["train"])
    # the data really come from the recorded model: its exact log-likelihood beats a shuffled model's
    with torch.no_grad():
        fit = LinearGaussianDecoder.from_truth(a.truth).log_marginal(a.x["test"]).mean()
        assert fit > LinearGaussianDecoder.from_truth(other.truth).log_marginal(a.x["test"]).mean() + 1.0


def test_fashion_mnist_splits_and_binarizations():
    static = load_data(DataConfig(), CPU)  # thresholded at 0.5
    assert [static.x[s].shape for s in ("train", "valid", "test")] == [
        (55000, 784),
        (5000, 784),
        (10000, 784),
    ]
    assert set(torch.unique(static.x["train"]).tolist()) == {0.0, 1.0}
    assert static.image_shape == (1, 28, 28) and static.labels["test"].shape == (10000,)

    raw = load_data(DataConfig(binarize=Binarize.none), CPU)
    assert raw.x["train"].min() >= 0.0 and raw.x["train"].max() <= 1.0
    assert len(torch.unique(raw.x["train"])) > 2
    assert torch.equal(static.x["valid"], (raw.x["valid"] > 0.5).float())

    dynamic = load_data(DataConfig(binarize=Binarize.dynamic, num_train=1000), CPU)
    first = dynamic.epoch_train(epoch_generator(0, 0, CPU))
    second = dynamic.epoch_train(epoch_generator(0, 1, CPU))
    assert not torch.equal(first, second) and set(torch.unique(second).tolist()) == {0.0, 1.0}
    # the split does not depend on the binarization, and every split is evaluated on binary pixels
    assert torch.equal(dynamic.labels["valid"], static.labels["valid"])
    assert all(bool(((dynamic.x[s] == 0) | (dynamic.x[s] == 1)).all()) for s in ("train", "valid", "test"))


def test_class_subset_keeps_only_those_classes():
    data = load_data(DataConfig(classes=[0, 3]), CPU)
    for split in ("train", "valid", "test"):
        assert set(torch.unique(data.labels[split]).tolist()) == {0, 3}
    assert data.x["test"].shape[0] == 2000
