"""Datasets as tensors on the device, and minibatches that carry example indices.

Fashion-MNIST (Xiao et al. 2017) comes from `fashion_mnist.py`; its 60k training
images are split 55k/5k into train/valid by a permutation fixed by `data.seed`, and the
10k test images are the test split. Pixels are scaled to [0, 1] and binarized
statically (threshold, as in Cremer et al. 2018), dynamically (a fresh Bernoulli draw
every epoch; valid/test are drawn once), or not at all. The `linear_gaussian` data
are drawn from a seeded probabilistic-PCA model x = W z + b + sigma * eps (Tipping & Bishop
1999), whose parameters are kept as `truth` (plain tensors: this package knows no models;
`vi_lab.models.linear_gaussian.LinearGaussianDecoder.from_truth` rebuilds the model). The
`banana` data come from a curved model with a 2-D latent, z ~ N(0, I),
x = (z_1, z_2 + c (z_1^2 - 1)) + sigma * eps (the "banana" of Haario et al. 2001 as a
likelihood): with a vague first coordinate and a sharp second one, its posteriors bend
along a parabola (`vi_lab.models.banana.BananaDecoder.from_truth`).

Every batch is `(x, idx)`: idx are the rows of the training split, so per-datapoint
variational parameters find their rows. The whole split lives on the device and a
batch is one gather: no DataLoader, no worker processes, no copies per step.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from vi_lab.config import Binarize, DataConfig, Dataset
from vi_lab.data import fashion_mnist

SPLITS = ("train", "valid", "test")
NUM_VALID = 5000


@dataclass
class LinearGaussianTruth:
    """The parameters that generated linear-Gaussian data: x = W z + b + sigma * eps."""

    weight: Tensor  # W, (P, D)
    bias: Tensor  # b, (P,)
    noise_std: float  # sigma

    def to(self, device: torch.device) -> LinearGaussianTruth:
        return LinearGaussianTruth(self.weight.to(device), self.bias.to(device), self.noise_std)


@dataclass
class BananaTruth:
    """The parameters that generated banana data: x = (z_1, z_2 + c (z_1^2 - 1)) + sigma * eps."""

    curvature: float  # c
    noise_std: Tensor  # sigma, (2,)

    def to(self, device: torch.device) -> BananaTruth:
        return BananaTruth(self.curvature, self.noise_std.to(device))


def banana_mean(z: Tensor, curvature: float) -> Tensor:
    """(z_1, z_2 + c (z_1^2 - 1)) for z (..., 2)."""
    z1, z2 = z.unbind(-1)
    return torch.stack([z1, z2 + curvature * (z1.square() - 1.0)], dim=-1)


@dataclass
class Data:
    x: dict[str, Tensor]  # split -> (N, P) float32; train holds intensities when dynamic
    labels: dict[str, Tensor | None]  # split -> (N,) int64, None for synthetic data
    image_shape: tuple[int, int, int] | None
    dynamic: bool  # resample binary training pixels every epoch
    truth: LinearGaussianTruth | BananaTruth | None = None  # the generating parameters of synthetic data

    @property
    def data_dim(self) -> int:
        return self.x["train"].shape[1]

    @property
    def num_train(self) -> int:
        return self.x["train"].shape[0]

    def epoch_train(self, generator: torch.Generator) -> Tensor:
        """The training pixels seen in this epoch (Bernoulli-resampled when dynamic)."""
        if not self.dynamic:
            return self.x["train"]
        return torch.bernoulli(self.x["train"], generator=generator)


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    """The one source of an epoch's randomness (order, dynamic binarization): resumable."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed * 1_000_003 + epoch)
    return generator


def batches(
    x: Tensor, batch_size: int, generator: torch.Generator, start: int = 0
) -> Iterator[tuple[Tensor, Tensor]]:
    """Shuffled minibatches (x[idx], idx) from batch number `start` on."""
    order = torch.randperm(x.shape[0], generator=generator, device=x.device)
    for begin in range(start * batch_size, x.shape[0], batch_size):
        idx = order[begin : begin + batch_size]  # (B,)
        yield x[idx], idx


def num_batches(num_points: int, batch_size: int) -> int:
    return math.ceil(num_points / batch_size)


def load_data(config: DataConfig, device: torch.device) -> Data:
    data = {Dataset.linear_gaussian: _linear_gaussian, Dataset.banana: _banana}.get(
        config.name, _fashion_mnist
    )(config)
    for split in SPLITS:
        data.x[split] = data.x[split].to(device)
        if data.labels[split] is not None:
            data.labels[split] = data.labels[split].to(device)
    if data.truth is not None:
        data.truth = data.truth.to(device)
    return data


def _subset(x: Tensor, labels: Tensor | None, limit: int | None) -> tuple[Tensor, Tensor | None]:
    if limit is None:
        return x, labels
    return x[:limit], None if labels is None else labels[:limit]


def _fashion_mnist(config: DataConfig) -> Data:
    arrays = fashion_mnist.load(config.path, download_if_missing=config.download)
    images = torch.cat(
        [torch.from_numpy(arrays["train_images"]), torch.from_numpy(arrays["test_images"])]
    ).flatten(1)  # (70000, 784) uint8
    labels = torch.cat(
        [torch.from_numpy(arrays["train_labels"]), torch.from_numpy(arrays["test_labels"])]
    ).long()
    x = images.float() / 255.0
    generator = torch.Generator().manual_seed(config.seed)
    if config.binarize == Binarize.static:
        x = (x > config.threshold).float()
    elif config.binarize == Binarize.dynamic:
        heldout = torch.bernoulli(x[-15000:], generator=generator)  # valid/test drawn once
        x = torch.cat([x[:-15000], heldout])

    num_fit = arrays["train_images"].shape[0]
    order = torch.randperm(num_fit, generator=generator)
    parts = {
        "train": order[NUM_VALID:],
        "valid": order[:NUM_VALID],
        "test": torch.arange(num_fit, x.shape[0]),
    }
    keep = None if config.classes is None else torch.isin(labels, torch.tensor(config.classes))
    split_x, split_labels = {}, {}
    for split, rows in parts.items():
        if keep is not None:
            rows = rows[keep[rows]]
        split_x[split], split_labels[split] = x[rows], labels[rows]
    split_x["train"], split_labels["train"] = _subset(
        split_x["train"], split_labels["train"], config.num_train
    )
    split_x["valid"], split_labels["valid"] = _subset(
        split_x["valid"], split_labels["valid"], config.num_valid
    )
    dynamic = config.binarize == Binarize.dynamic
    return Data(split_x, split_labels, (1, 28, 28), dynamic)


def _linear_gaussian(config: DataConfig) -> Data:
    spec = config.synthetic
    generator = torch.Generator().manual_seed(config.seed)
    # One discarded draw from the global generator, where a model's initialization used to be:
    # seeded runs on these data keep the initial weights (and numbers) they had before.
    torch.randn(spec.data_dim, spec.latent_dim)
    weight = torch.randn(spec.data_dim, spec.latent_dim, generator=generator)  # (P, D)
    bias = torch.randn(spec.data_dim, generator=generator)  # (P,)
    z = torch.randn(spec.num_points, spec.latent_dim, generator=generator)
    noise = spec.noise_std * torch.randn(spec.num_points, spec.data_dim, generator=generator)
    x = z @ weight.T + bias + noise  # (N, P)
    return _synthetic(x, config, LinearGaussianTruth(weight, bias, spec.noise_std))


def _banana(config: DataConfig) -> Data:
    spec = config.banana
    generator = torch.Generator().manual_seed(config.seed)
    truth = BananaTruth(spec.curvature, torch.tensor(spec.noise_std))
    z = torch.randn(spec.num_points, 2, generator=generator)
    x = banana_mean(z, truth.curvature) + truth.noise_std * torch.randn(
        spec.num_points, 2, generator=generator
    )
    return _synthetic(x, config, truth)


def _synthetic(x: Tensor, config: DataConfig, truth: LinearGaussianTruth | BananaTruth) -> Data:
    """Synthetic points x (N, P) split 55:5:10 into train, valid and test, in their order."""
    num_train = round(x.shape[0] * 55 / 70)
    num_valid = round(x.shape[0] * 5 / 70)
    split_x = {
        "train": x[:num_train],
        "valid": x[num_train : num_train + num_valid],
        "test": x[num_train + num_valid :],
    }
    split_x["train"], _ = _subset(split_x["train"], None, config.num_train)
    split_x["valid"], _ = _subset(split_x["valid"], None, config.num_valid)
    return Data(split_x, dict.fromkeys(SPLITS), None, False, truth=truth)
