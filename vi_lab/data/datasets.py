"""Datasets as tensors on the device, and minibatches that carry example indices.

Every file-backed dataset is one registry line in `SOURCES` (its module finds, checks and
reads the files: docs/datasets.md). A reader's splits become train/valid/test here: where the
files give no validation split (MNIST, Fashion-MNIST, CIFAR-10), `Source.num_valid` training
images become one, chosen by a permutation fixed by `data.seed` (Fashion-MNIST: 55k/5k/10k).
Pixels are scaled to [0, 1] and binarized (`data.binarize`):

- `threshold`: x > data.threshold, once (Cremer et al. 2018 use 0.5);
- `stochastic_static`: one Bernoulli draw per pixel, fixed by data.seed;
- `dynamic`: the training pixels drawn afresh every epoch (`Data.epoch_train`), as Burda
  et al. (2016) and Kim et al. (2018) train; the per-datapoint table then keeps one row per
  image, not per draw: a row follows its image through the draws;
- `none`: the intensities.

Evaluation and validation always see one fixed binarization, recorded in `Data.binarization`:
`Data.x` holds it for every split (for a dynamic run the stochastic_static draw, training split
included, so row gaps and `evaluate split=train` score fixed pixels). The `linear_gaussian`
data are drawn from a seeded probabilistic-PCA model x = W z + b + sigma * eps (Tipping &
Bishop 1999), whose parameters are kept as `truth` (plain tensors: this package knows no models;
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
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vi_lab.config import Binarize, ConfigError, DataConfig, Dataset
from vi_lab.data import binarized_mnist, cifar10, fashion_mnist, mnist, npz, omniglot
from vi_lab.data.source import Arrays, DataFileError, Source, locate

SPLITS = ("train", "valid", "test")

SOURCES: dict[Dataset, Source] = {
    Dataset.fashion_mnist: fashion_mnist.SOURCE,
    Dataset.mnist: mnist.SOURCE,
    Dataset.binarized_mnist: binarized_mnist.SOURCE,
    Dataset.omniglot: omniglot.SOURCE,
    Dataset.cifar10: cifar10.SOURCE,
    Dataset.npz: npz.SOURCE,
}

# The stochastic binarization's seed is data.seed plus this offset, far from the seeds of the
# epochs' generators (seed * 1_000_003 + epoch), so no epoch's dynamic draw repeats the fixed one.
# torch's CPU generator keeps only the low 32 bits of a seed: the offset must differ there.
STATIC_DRAW_OFFSET = 0x9E3779B9


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
    x: dict[str, Tensor]  # split -> (N, P) float32, binarized once: what evaluation and validation see
    labels: dict[str, Tensor | None]  # split -> (N,) int64, None without labels
    image_shape: tuple[int, int, int] | None  # (C, H, W); None for vectors
    # how x was binarized, for gaps.json: {"train": setting, "eval": fixed binarization, + "threshold"/"seed"}
    binarization: dict[str, Any]
    train_intensities: Tensor | None = None  # (N, P) training intensities, resampled every epoch (dynamic)
    truth: LinearGaussianTruth | BananaTruth | None = None  # the generating parameters of synthetic data

    @property
    def data_dim(self) -> int:
        return self.x["train"].shape[1]

    @property
    def num_train(self) -> int:
        return self.x["train"].shape[0]

    @property
    def dynamic(self) -> bool:
        return self.train_intensities is not None

    def epoch_train(self, generator: torch.Generator) -> Tensor:
        """The training pixels seen in this epoch (a fresh Bernoulli draw when dynamic)."""
        if self.train_intensities is None:
            return self.x["train"]
        return torch.bernoulli(self.train_intensities, generator=generator)


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
    synthetic = {Dataset.linear_gaussian: _linear_gaussian, Dataset.banana: _banana}.get(config.name)
    data = _from_files(config) if synthetic is None else synthetic(config)
    for split in SPLITS:
        data.x[split] = data.x[split].to(device)
        if data.labels[split] is not None:
            data.labels[split] = data.labels[split].to(device)
    if data.train_intensities is not None:
        data.train_intensities = data.train_intensities.to(device)
    if data.truth is not None:
        data.truth = data.truth.to(device)
    return data


def _subset(x: Tensor, labels: Tensor | None, limit: int | None) -> tuple[Tensor, Tensor | None]:
    if limit is None:
        return x, labels
    return x[:limit], None if labels is None else labels[:limit]


def _from_files(config: DataConfig) -> Data:
    source = SOURCES[config.name]
    if source.files is None:  # the user's own file
        location = pathlib.Path(config.path).expanduser()
    else:
        location = locate(source.files, config.path, config.download)
    return _splits(source.read(location), source, config)


def _split_rows(arrays: Arrays, source: Source, config: DataConfig) -> dict[str, Tensor]:
    """Each split's rows in the concatenation train, [valid,] test of the reader's arrays."""
    sizes = {split: arrays.images[split].shape[0] for split in SPLITS if split in arrays.images}
    bounds = np.cumsum([0, *sizes.values()])
    rows = {split: torch.arange(bounds[i], bounds[i + 1]) for i, split in enumerate(sizes)}
    if "valid" in rows:
        return rows
    num_fit = sizes["train"]
    if source.num_valid is None or num_fit <= source.num_valid:
        raise DataFileError(
            f"data.name={config.name.value}: {num_fit} training images and no validation split "
            f"(the source carves {source.num_valid} from training)."
        )
    order = torch.randperm(num_fit, generator=torch.Generator().manual_seed(config.seed))
    return {"train": order[source.num_valid :], "valid": order[: source.num_valid], "test": rows["test"]}


def _binarize(x: Tensor, source: Source, config: DataConfig) -> tuple[Tensor, Tensor | None, dict[str, Any]]:
    """(the fixed pixels, the intensities a dynamic run resamples or None, the record of how)."""
    if source.binary or config.binarize == Binarize.none:
        how = "files" if source.binary else "none"
        return x, None, {"train": how, "eval": how}
    low, high = x.min().item(), x.max().item()
    if low < 0.0 or high > 1.0:
        raise DataFileError(
            f"data.binarize={config.binarize.value} needs pixel values in [0, 1], but the "
            f"{config.name.value} data hold values in [{low:g}, {high:g}]: rescale them or set "
            "data.binarize=none."
        )
    if config.binarize == Binarize.threshold:
        return (
            (x > config.threshold).float(),
            None,
            {"train": "threshold", "eval": "threshold", "threshold": config.threshold},
        )
    generator = torch.Generator().manual_seed(config.seed + STATIC_DRAW_OFFSET)
    fixed = torch.bernoulli(x, generator=generator)  # one draw for every image of every split
    record = {"train": config.binarize.value, "eval": "stochastic_static", "seed": config.seed}
    return fixed, x if config.binarize == Binarize.dynamic else None, record


def _keep_classes(labels: Tensor | None, config: DataConfig) -> Tensor | None:
    """A mask over all images of the classes in data.classes (None: keep all)."""
    if config.classes is None:
        return None
    if labels is None:
        raise ConfigError(f"data.classes: {config.name.value} has no labels to choose classes by")
    absent = sorted(set(config.classes) - set(torch.unique(labels).tolist()))
    if absent:
        raise ConfigError(
            f"data.classes: no {config.name.value} image has class {', '.join(map(str, absent))} "
            f"(its classes: {labels.min().item()}..{labels.max().item()})"
        )
    return torch.isin(labels, torch.tensor(config.classes))


def _splits(arrays: Arrays, source: Source, config: DataConfig) -> Data:
    names = [split for split in SPLITS if split in arrays.images]
    images = torch.cat([torch.from_numpy(arrays.images[split]) for split in names])  # (N, C, H, W) or (N, P)
    x = images.flatten(1)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()  # (N, P)
    has_labels = all(arrays.labels.get(split) is not None for split in names)
    labels = (
        torch.cat([torch.from_numpy(arrays.labels[split]).long() for split in names]) if has_labels else None
    )

    parts = _split_rows(arrays, source, config)
    fixed, intensities, record = _binarize(x, source, config)
    keep = _keep_classes(labels, config)
    split_x, split_labels = {}, {}
    for split, rows in parts.items():
        if keep is not None:
            rows = rows[keep[rows]]
        parts[split] = rows
        split_x[split] = fixed[rows]
        split_labels[split] = None if labels is None else labels[rows]
    split_x["train"], split_labels["train"] = _subset(
        split_x["train"], split_labels["train"], config.num_train
    )
    split_x["valid"], split_labels["valid"] = _subset(
        split_x["valid"], split_labels["valid"], config.num_valid
    )
    train_intensities = None
    if intensities is not None:
        train_intensities = intensities[parts["train"][: split_x["train"].shape[0]]]
    image_shape = tuple(images.shape[1:]) if images.dim() == 4 else None
    return Data(split_x, split_labels, image_shape, record, train_intensities)


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
    return Data(split_x, dict.fromkeys(SPLITS), None, {"train": "none", "eval": "none"}, truth=truth)
