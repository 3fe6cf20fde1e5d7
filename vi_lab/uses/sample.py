"""New images from a trained decoder: prior samples and latent interpolations (the generative
model p(z) p_theta(x | z) of Kingma & Welling 2014).

Prior samples decode z ~ N(0, I) through E[x | z] (pixel probabilities for a Bernoulli
decoder). An interpolation walks in a straight line between the posterior means of two
test images (`posterior.infer`: the encoder, or a fresh per-datapoint fit) and decodes
every step; each row of the picture is [image a, decoded steps ..., image b].
`sample_run` is `vi-lab sample`: RUN/uses/samples.png and interpolation.png, and the
TensorBoard images `uses/samples` and `uses/interpolation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from vi_lab.config import ConfigError, override
from vi_lab.inference.objectives import GenerativeDecoder
from vi_lab.runs.board import image_grid
from vi_lab.runs.folder import load_run
from vi_lab.runs.outputs import open_outputs, require_images


@torch.no_grad()
def prior_samples(
    decoder: GenerativeDecoder, num: int, device: torch.device, generator: torch.Generator | None = None
) -> Tensor:
    """E[x | z] for num draws z ~ N(0, I) (drawn on the CPU by `generator`), shape (num, P)."""
    z = torch.randn(num, decoder.latent_dim, generator=generator).to(device)  # (N, D)
    return decoder.mean(z)


def interpolate(start: Tensor, end: Tensor, num_steps: int) -> Tensor:
    """Points on the segments from start (B, D) to end (B, D), both ends included: (B, num_steps, D)."""
    weights = torch.linspace(0.0, 1.0, num_steps, device=start.device)[:, None]  # (T, 1)
    return torch.lerp(start[:, None], end[:, None], weights)


@dataclass
class SampleConfig:
    """Settings of `vi-lab sample`; override as `vi-lab sample RUN key=value`."""

    num: int = 64  # prior samples (also --num)
    num_pairs: int = 4  # interpolations, between test images 2i and 2i + 1
    num_steps: int = 8  # decoded points per interpolation, ends included
    split: str = "test"
    seed: int = 0

    def check(self) -> None:
        for key in ("num", "num_pairs"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be positive")
        if self.num_steps < 2:
            raise ConfigError("num_steps: must be at least 2")
        if self.split not in ("train", "valid", "test"):
            raise ConfigError("split: must be train, valid or test")


def sample_run(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Path]:
    """Write prior samples and interpolations of a run's decoder; returns the PNG paths."""
    config = override(SampleConfig(), overrides)
    run = load_run(run_dir)
    shape = require_images(run, "sample")
    decoder, posterior = run.model.decoder, run.model.posterior
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)

    samples = prior_samples(decoder, config.num, run.device, generator)  # (N, P)
    x = run.data.x[config.split][: 2 * config.num_pairs]
    if x.shape[0] < 2:
        raise ValueError(f"the {config.split} split has fewer than two points to interpolate between")
    num_pairs = x.shape[0] // 2
    x = x[: 2 * num_pairs]
    with torch.no_grad():
        loc = posterior.family.center(posterior.infer(decoder, x))  # (2 pairs, D)
        path = interpolate(loc[0::2], loc[1::2], config.num_steps)  # (pairs, T, D)
        decoded = decoder.mean(path)  # (pairs, T, P)
    rows = torch.cat([x[0::2, None], decoded, x[1::2, None]], dim=1)  # (pairs, T + 2, P)

    name = run.run_dir.name
    with open_outputs(run) as out:
        return {
            "samples": out.image(
                "samples",
                image_grid(samples, shape),
                f"{name}: {samples.shape[0]} decoded prior samples, the mean of p(x | z), z ~ N(0, I)",
            ),
            "interpolation": out.image(
                "interpolation",
                image_grid(rows.flatten(0, 1), shape, num_pairs),
                f"{name}: {config.split} images (first and last column) and the decoded straight line "
                "between their posterior means",
                [f"pair {i + 1}" for i in range(num_pairs)],
            ),
        }
