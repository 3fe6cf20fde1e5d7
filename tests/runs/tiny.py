"""A training run of about 0.1 s (a local run: 0.5 s) on linear-Gaussian data, for tests of a
run's mechanics (stops, resumes, checkpoints, locks) rather than of its numbers: 110 training
points, 6 batches an epoch, 2 epochs."""

from __future__ import annotations

from pathlib import Path

from vi_lab.config import Config, load_config

ROOT = Path(__file__).parents[2]
TINY = [
    "progress=false",
    "device=cpu",  # where bit-for-bit equality is promised: CUDA kernels may reorder sums
    "data.synthetic.num_points=140",
    "model.hidden=[8]",
    "inference.inner.max_steps=10",
    "inference.refine.num_steps=2",
    "train.epochs=2",
    "train.batch_size=20",
    "train.log_every=3",
    "train.num_images=1",
    "train.valid_num_points=10",
    "train.valid_num_samples=10",
    "eval.refine.max_steps=20",
]


def tiny_config(*overrides: str) -> Config:
    return load_config(ROOT / "configs" / "linear_gaussian.yaml", [*TINY, *overrides])


def tiny_args(*overrides: str) -> list[str]:
    """The same run as `vi-lab train` arguments."""
    return ["configs/linear_gaussian.yaml", *TINY, *overrides]
