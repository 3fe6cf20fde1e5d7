"""Filling in missing pixels with a trained model (missing-data imputation as in
Rezende, Mohamed & Wierstra 2014).

With observed pixels o and missing pixels m, the posterior given x_o alone is fitted by
maximizing the ELBO whose likelihood counts the observed pixels only,
    L_o(q) = E_q[sum_{j in o} log p(x_j | z)] - KL(q || p(z)),
with the decoder frozen (`inference/refine.py`), starting from the posterior's guess for the image
with its missing pixels set to the training mean (the encoder's q, or the prior). The
imputation is the predictive mean E_q[E[x_m | z]] (a Monte Carlo average over q).
Errors are mean squared errors on the missing pixels, against the training-set mean image
as a baseline and against the unrefined guess.

Masks (`--mask SPEC`, True = observed): `random:F` hides a fraction F of the pixels at
random, `top` hides the top half of each image, `bottom` the bottom half (for non-image
data: the first or second half of the coordinates).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vi_lab.chunking import map_points
from vi_lab.config import LocalFitConfig, override, require
from vi_lab.evaluation.gaps import standard_error
from vi_lab.inference.families import Family
from vi_lab.inference.objectives import GenerativeDecoder, LogLikelihood
from vi_lab.inference.refine import Refined, refine
from vi_lab.runs.board import image_grid, write_json
from vi_lab.runs.folder import load_run
from vi_lab.runs.outputs import open_outputs

MASK_HELP = "random:F (hide a fraction 0 < F < 1 of the pixels), top or bottom (hide that half)"
MISSING_GRAY = 0.5  # how a missing pixel is drawn in the picture


def parse_mask(spec: str) -> tuple[str, float]:
    """("random", F), ("top", 0.5) or ("bottom", 0.5): the kind and the fraction hidden."""
    kind, _, rest = spec.partition(":")
    if kind in ("top", "bottom") and not rest:
        return kind, 0.5
    if kind == "random" and rest:
        try:
            fraction = float(rest)
        except ValueError:
            fraction = math.nan
        if 0.0 < fraction < 1.0:
            return kind, fraction
    raise ValueError(f"--mask must be {MASK_HELP}, got {spec!r}")


def make_mask(
    spec: str,
    num_points: int,
    data_dim: int,
    image_shape: tuple[int, int, int] | None,
    generator: torch.Generator,
) -> Tensor:
    """Observed-pixel mask (num_points, data_dim), True = observed."""
    kind, fraction = parse_mask(spec)
    if kind == "random":
        return torch.rand(num_points, data_dim, generator=generator) >= fraction
    if image_shape is None:
        hidden = torch.arange(data_dim) < data_dim // 2  # (P,) the first half
    else:
        channels, height, width = image_shape
        rows = torch.arange(height)[:, None].expand(height, width)  # (H, W) row index of each pixel
        hidden = (rows < height // 2).expand(channels, height, width).flatten()  # (P,) the top half
    hidden = hidden if kind == "top" else ~hidden
    return (~hidden).expand(num_points, data_dim).clone()


def masked_log_prob(decoder: GenerativeDecoder, x: Tensor, observed: Tensor, z: Tensor) -> Tensor:
    """log p(x_o | z), summed over the observed pixels: x, observed (B, P), z (S, B, D) -> (S, B)."""
    per_pixel = decoder.log_prob_pixels(x, z)  # (S, B, P)
    return torch.where(observed, per_pixel, torch.zeros_like(per_pixel)).sum(-1)


def fit_observed(
    decoder: GenerativeDecoder,
    family: Family,
    x: Tensor,
    observed: Tensor,
    params: Tensor,
    config: LocalFitConfig,
    batch_size: int,
) -> Refined:
    """q fitted to the observed pixels only (L_o above), decoder frozen, in chunks of points.

    Each row refinement sees is a point's pixels followed by its mask, (N, 2P), and the
    likelihood splits it again: a row keeps its own mask wherever refinement moves it."""
    width = x.shape[1]
    likelihood = LogLikelihood(
        decoder.latent_dim,
        lambda rows, z: masked_log_prob(decoder, rows[:, :width], rows[:, width:].bool(), z),
    )
    return refine(likelihood, family, torch.cat([x, observed.to(x.dtype)], 1), params, config, batch_size)


@torch.no_grad()
def predictive_mean(
    decoder: GenerativeDecoder, family: Family, params: Tensor, num_samples: int, batch_size: int
) -> Tensor:
    """E_q[E[x | z]] by Monte Carlo, in chunks of points, (N, P)."""
    return map_points(
        lambda params: decoder.mean(family.sample(params, num_samples).z).mean(0),  # (b, P)
        params,
        size=batch_size,
    )


def missing_error(prediction: Tensor, x: Tensor, observed: Tensor) -> Tensor:
    """Per-point mean squared error over the missing pixels, (N,)."""
    missing = (~observed).to(x.dtype)
    return ((prediction - x).square() * missing).sum(-1) / missing.sum(-1).clamp(min=1)


@dataclass
class ImputeConfig:
    """Settings of `vi-lab impute`; override as `vi-lab impute RUN key=value --mask SPEC`."""

    split: str = "test"
    num_points: int = 200
    num_images: int = 8  # columns of the picture: observed / imputed / truth
    num_samples: int = 100  # samples of q averaged in the imputation
    max_steps: int | None = None  # cap on fitting steps (null: the run's eval.refine.max_steps)
    batch_size: int = 500
    seed: int = 0

    def check(self) -> None:
        require(self.split in ("train", "valid", "test"), "split", "must be train, valid or test")
        for key in ("num_points", "num_images", "num_samples", "batch_size"):
            require(getattr(self, key) >= 1, key, "must be positive")
        require(self.max_steps is None or self.max_steps >= 1, "max_steps", "must be positive or null")


def _mean_se(values: Tensor) -> tuple[float, float]:
    return values.mean().item(), standard_error(values.cpu().numpy())


def impute_run(run_dir: str | Path, mask: str, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Impute the missing pixels of a split's first points; writes RUN/uses/impute.json (and
    impute.png for images) and TensorBoard scalars `uses/impute/...` and the image `uses/impute`."""
    config = override(ImputeConfig(), overrides)
    parse_mask(mask)  # a bad spec fails before the run is loaded
    run = load_run(run_dir)
    decoder, posterior = run.model.decoder, run.model.posterior
    x = run.data.x[config.split][: config.num_points]
    generator = torch.Generator().manual_seed(config.seed)
    observed = make_mask(mask, x.shape[0], x.shape[1], run.data.image_shape, generator).to(x.device)
    torch.manual_seed(config.seed)

    mean_image = run.data.x["train"].mean(0)  # (P,) the baseline
    x_filled = torch.where(observed, x, mean_image)
    fit_config = run.config.eval.refine
    if config.max_steps is not None:
        fit_config = dataclasses.replace(fit_config, max_steps=config.max_steps)
    family = posterior.family
    with torch.no_grad():
        start = posterior.guess(x_filled)
    guess = predictive_mean(decoder, family, start, config.num_samples, config.batch_size)
    fit = fit_observed(decoder, family, x, observed, start, fit_config, config.batch_size)
    imputed = predictive_mean(decoder, family, fit.params, config.num_samples, config.batch_size)

    errors = {
        "imputed": missing_error(imputed, x, observed),
        "guess": missing_error(guess, x, observed),
        "mean_image": missing_error(mean_image.expand_as(x), x, observed),
    }
    summary: dict[str, Any] = {
        "mask": mask,
        "split": config.split,
        "num_points": x.shape[0],
        "missing_fraction": (~observed).float().mean().item(),
        "fit_steps_mean": fit.steps.float().mean().item(),
        "fit_seconds": fit.seconds,
    }
    for name, values in errors.items():
        summary[f"mse_{name}"], summary[f"mse_{name}_se"] = _mean_se(values)
    with open_outputs(run) as out:
        for name in errors:
            out.scalar(f"impute/{mask.replace(':', '_')}/mse_{name}", summary[f"mse_{name}"])
        if run.data.image_shape is not None:
            n = min(config.num_images, x.shape[0])
            shown = torch.where(observed, x, MISSING_GRAY)[:n]
            filled = torch.where(observed, x, imputed)[:n]
            grid = image_grid(torch.cat([shown, filled, x[:n]]), run.data.image_shape, num_rows=3)
            caption = (
                f"{run.run_dir.name}: {config.split} images with pixels hidden ({mask}, gray), "
                "filled in by q fitted to the observed ones"
            )
            labels = ("observed", "imputed", "truth")
            summary["png"] = str(out.image("impute", grid, caption, labels))
        write_json(summary, out.folder / "impute.json")
    return summary


def format_impute(summary: dict[str, Any]) -> str:
    lines = [
        f"mask {summary['mask']}: {summary['missing_fraction']:.0%} of the pixels missing, "
        f"{summary['num_points']} {summary['split']} points; MSE on the missing pixels (± s.e.)"
    ]
    labels = {
        "imputed": "imputed (q fitted to observed)",
        "guess": "guess (no fitting)",
        "mean_image": "mean image",
    }
    for name, label in labels.items():
        lines.append(f"  {label:<32} {summary[f'mse_{name}']:.4f} ± {summary[f'mse_{name}_se']:.4f}")
    return "\n".join(lines)
