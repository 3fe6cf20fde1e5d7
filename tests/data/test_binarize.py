"""data.binarize on tiny grey images (an .npz file): threshold, stochastic_static, dynamic, none.

Whatever the training sees, `Data.x` holds one fixed binarization of every split, recorded in
`Data.binarization`; a dynamic run draws its training pixels afresh every epoch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vi_lab.config import Binarize, DataConfig, Dataset, config_yaml, load_config
from vi_lab.data.datasets import epoch_generator, load_data
from vi_lab.train import train

CPU = torch.device("cpu")
SPLITS = ("train", "valid", "test")


@pytest.fixture
def grey(tmp_path):
    """40/10/10 grey 1x4x4 images (uint8) in an .npz file, and their intensities in [0, 1]."""
    rng = np.random.default_rng(0)
    sizes = {"train": 40, "valid": 10, "test": 10}
    arrays = {s: rng.integers(0, 256, size=(n, 4, 4), dtype=np.uint8) for s, n in sizes.items()}
    path = tmp_path / "grey.npz"
    np.savez(path, **arrays)
    intensities = {s: torch.from_numpy(a).flatten(1).float() / 255 for s, a in arrays.items()}
    return str(path), intensities


def load(path: str, binarize: Binarize, **fields) -> object:
    return load_data(DataConfig(name=Dataset.npz, path=path, binarize=binarize, **fields), CPU)


def test_threshold_and_none(grey):
    path, intensities = grey
    data = load(path, Binarize.threshold, threshold=0.3)
    for split in SPLITS:
        assert torch.equal(data.x[split], (intensities[split] > 0.3).float())
    assert data.binarization == {"train": "threshold", "eval": "threshold", "threshold": 0.3}
    assert not data.dynamic and data.epoch_train(epoch_generator(0, 0, CPU)) is data.x["train"]
    raw = load(path, Binarize.none)
    assert torch.equal(raw.x["valid"], intensities["valid"]) and raw.binarization["eval"] == "none"


def test_stochastic_static_is_one_seeded_draw_per_image(grey):
    path, intensities = grey
    data = load(path, Binarize.stochastic_static)
    again = load(path, Binarize.stochastic_static)
    other_seed = load(path, Binarize.stochastic_static, seed=1)
    assert all(torch.equal(data.x[s], again.x[s]) for s in SPLITS)
    assert set(torch.unique(data.x["train"]).tolist()) == {0.0, 1.0}
    assert not torch.equal(data.x["train"], other_seed.x["train"])
    assert not torch.equal(data.x["train"], (intensities["train"] > 0.5).float())
    # a Bernoulli draw of the intensities: 640 training pixels, mean within 4 standard errors
    gap = (data.x["train"] - intensities["train"]).mean().item()
    assert abs(gap) < 4 * (0.25 / data.x["train"].numel()) ** 0.5
    # the draw belongs to the image, not to the subset taken
    assert torch.equal(load(path, Binarize.stochastic_static, num_train=3).x["train"], data.x["train"][:3])
    assert data.binarization == {"train": "stochastic_static", "eval": "stochastic_static", "seed": 0}


def test_dynamic_draws_every_epoch_and_evaluates_on_one_fixed_draw(grey):
    path, intensities = grey
    data = load(path, Binarize.dynamic)
    fixed = load(path, Binarize.stochastic_static)
    first = data.epoch_train(epoch_generator(0, 0, CPU))
    assert torch.equal(first, data.epoch_train(epoch_generator(0, 0, CPU)))  # an epoch's draw is resumable
    draws = [first] + [data.epoch_train(epoch_generator(0, epoch, CPU)) for epoch in (1, 2)]
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[1], draws[2])
    assert all(set(torch.unique(d).tolist()) == {0.0, 1.0} for d in draws)
    assert not any(torch.equal(d, data.x["train"]) for d in draws)  # no epoch repeats the fixed draw
    assert torch.equal(data.train_intensities, intensities["train"])
    # evaluation and validation see the stochastic_static draw, training split included
    assert all(torch.equal(data.x[s], fixed.x[s]) for s in SPLITS)
    assert data.binarization == {"train": "dynamic", "eval": "stochastic_static", "seed": 0}


def test_the_old_name_static_is_threshold():
    config = load_config(None, ["data.binarize=static"])
    assert config.data.binarize is Binarize.threshold
    assert "binarize: threshold" in config_yaml(config)


def test_a_dynamic_run_trains_on_a_new_draw_every_epoch(grey, tmp_path, monkeypatch):
    """The training loop gets a different binarization each epoch (per-datapoint rows follow images)."""
    import vi_lab.train as training

    path, intensities = grey
    seen = []

    def recording(x, *args, **kwargs):
        seen.append(x.clone())
        return original(x, *args, **kwargs)

    original = training.batches
    monkeypatch.setattr(training, "batches", recording)
    config = load_config(
        None,
        [
            "data.name=npz", f"data.path={path}", "data.binarize=dynamic", "inference.kind=local",
            "inference.inner.max_steps=2", "model.latent_dim=2", "model.hidden=[8]", "train.epochs=3",
            "train.batch_size=40", "train.valid_num_points=5", "train.valid_num_samples=8",
            "train.num_images=4", "eval.refine.max_steps=20", "progress=false", "device=cpu",
        ],
    )  # fmt: skip
    train(config, tmp_path / "run")
    assert len(seen) == 3
    assert not torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])
    assert all(set(torch.unique(x).tolist()) == {0.0, 1.0} for x in seen)
    # every epoch's pixels are draws of the same images' intensities, row by row
    assert (torch.stack(seen).mean(0) - intensities["train"]).abs().mean() < 0.3
