"""What a run is validated with during training: one measure for every mode.

On a fixed subset of the validation split, q is refined to convergence from the
posterior's guess with the decoder frozen, and log p(x) is estimated with the refined q
as proposal (`gaps.measure_gaps`): the gaps of Cremer, Li & Duvenaud (2018), Eq. 3-4,
so local, amortized and semi-amortized runs are compared on the same footing. Beside
the numbers, reconstructions from the refined q and decoded prior samples as image grids.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vi_lab.config import EvalConfig
from vi_lab.evaluation.gaps import GapReport, measure_gaps, measure_row_gap, standard_error
from vi_lab.inference.families import Family
from vi_lab.inference.objectives import Decoder
from vi_lab.models.model import LatentVariableModel
from vi_lab.runs.board import image_grid

VALID_KEYS = ("elbo_refined", "log_px", "elbo_encoder", "amortization_gap", "approximation_gap")


class NonFiniteValidation(ArithmeticError):
    """The decoder's parameters or a validation bound are NaN or infinite."""


def validate(
    model: LatentVariableModel, x: Tensor, config: EvalConfig, num_samples: int
) -> tuple[dict[str, float], GapReport]:
    """The `VALID_KEYS` that apply to the model (`elbo_encoder` needs an encoder), with the
    standard errors of the bounds and the gaps as `<key>_se`, and the report behind them."""
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise NonFiniteValidation("non-finite parameters")  # refining q would only burn max_steps
    report = measure_gaps(model, x, config, num_samples=num_samples)
    summary = report.summary()
    summary["elbo_encoder"] = summary["elbo_amortized"]
    values = {key: summary[key] for key in VALID_KEYS if summary[key] is not None}
    if not all(math.isfinite(value) for value in values.values()):
        raise NonFiniteValidation("a non-finite bound")
    with_errors = (
        "elbo_refined",
        "log_px",
        "amortization_gap",
        "approximation_gap",
    )  # the curves' error bars
    values.update({f"{key}_se": summary[f"{key}_se"] for key in with_errors if key in values})
    return values, report


def row_gap(model: LatentVariableModel, x: Tensor, config: EvalConfig) -> tuple[float, float]:
    """Mean and standard error of L[q*_i] - L[q_i] over the first training points x: how
    far the posterior's q of training points is from their own optimum."""
    gap = measure_row_gap(model, x, torch.arange(x.shape[0], device=x.device), config)
    return gap.mean().item(), standard_error(gap.cpu().numpy())


@torch.no_grad()
def exact_row_gap(model: LatentVariableModel, x: Tensor) -> float | None:
    """The mean row gap of the first training points in closed form, where the decoder has one
    (the linear-Gaussian model, for a family with a closed-form best q); else None."""
    decoder, family = model.decoder, model.family
    if not hasattr(decoder, "best_in"):
        return None
    try:
        best = decoder.best_in(family, x)
    except NotImplementedError:  # a flow's best q has no closed form
        return None
    idx = torch.arange(x.shape[0], device=x.device)
    return (
        (decoder.exact_elbo(x, family, best) - decoder.exact_elbo(x, family, model.posterior(x, idx)))
        .mean()
        .item()
    )


ROW_GAP_LIMIT = 3.0  # nats: per-datapoint rows further than this from their optimum lag the decoder
ROW_GAP_FLOOR = 1.0  # nats: a gap below this is kept up with, even where it grew


def row_gap_warning(previous: dict[str, float] | None, mean: float, se: float, epoch: int) -> str | None:
    """One line when a table's rows lag: a row gap above ROW_GAP_LIMIT, or one above ROW_GAP_FLOOR
    that grew since the previous measurement by more than 2 standard errors of the difference;
    else None."""
    grew = (
        previous is not None
        and mean > ROW_GAP_FLOOR
        and mean - previous["row_gap"] > 2.0 * math.hypot(se, previous["row_gap_se"])
    )
    if mean <= ROW_GAP_LIMIT and not grew:
        return None
    why = f"above {ROW_GAP_LIMIT:g}" if mean > ROW_GAP_LIMIT else f"up from {previous['row_gap']:.2f}"
    return (
        f"the per-datapoint rows lag the decoder: train/row_gap {mean:.2f} ± {se:.2f} nats at epoch {epoch} "
        f"({why}); raise inference.inner.max_steps or lower train.lr (docs/inner_loop.md)"
    )


@torch.no_grad()
def posterior_log_std(family: Family, params: Tensor, num_samples: int = 32) -> Tensor:
    """log of the standard deviation of each latent under each q, from `num_samples` draws, (N, D):
    the same measure for every family (a flow's has no closed form)."""
    return family.sample(params, num_samples).z.std(0).log()


@torch.no_grad()
def validation_images(
    decoder: Decoder, x: Tensor, center: Tensor, image_shape: tuple[int, int, int], num_images: int, seed: int
) -> dict[str, Tensor]:
    """Image grids: reconstructions from the refined q (decoded at `Family.center`) beside their
    inputs, and decoded prior samples (the same z at every validation of a run)."""
    num = min(num_images // 2, x.shape[0])
    pairs = torch.stack([x[:num], decoder.mean(center[:num])], dim=1).flatten(0, 1)  # (2 num, P)
    prior_z = torch.randn(num_images, decoder.latent_dim, generator=torch.Generator().manual_seed(seed))
    return {
        "images/reconstructions": image_grid(pairs, image_shape),
        "images/prior_samples": image_grid(decoder.mean(prior_z.to(x.device)), image_shape),
    }
