"""The gaps of Cremer, Li & Duvenaud (2018), measured on a set of points.

    amortization gap  = L[q*] - L[q]        (encoder q vs the best q of its family)
    approximation gap = log p(x) - L[q*]    (the family vs the true posterior)
    inference gap     = log p(x) - L[q]
and, for every kind of posterior, the gap left by its own inference on new points,
    inferred gap      = L[q*] - L[q_inferred]
with q_inferred = `posterior.infer`: the encoder's q (amortized), the encoder's q after
the K training-time steps (semi-amortized: what the decoder learned from), the training
inner loop run from the prior (per-datapoint).
L[q*] comes from test-time refinement (`inference/refine.py`), log p(x) from the importance-
weighted bound (`iwae.py`) or AIS (`ais.py`) with the refined q as proposal. Means
are per datapoint in nats, each with the standard error of its per-point values.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vi_lab.chunking import map_points, memory_budget_mb
from vi_lab.config import Estimator, EvalConfig, RefineInit
from vi_lab.evaluation.ais import ais_log_marginal
from vi_lab.evaluation.iwae import iwae_log_marginal
from vi_lab.inference import gaussian
from vi_lab.inference.local_fit import window_gain
from vi_lab.inference.objectives import chunked_elbo
from vi_lab.inference.refine import refine
from vi_lab.models.model import LatentVariableModel

ELBO_SAMPLES = 100  # Monte Carlo samples behind each reported per-point ELBO


@dataclass
class GapReport:
    elbo_amortized: Tensor | None  # (N,) L[q], None without an encoder
    elbo_inferred: Tensor  # (N,) L[q_inferred], q from `posterior.infer`
    elbo_refined: Tensor  # (N,) L[q*]
    log_px: Tensor  # (N,) log p^(x)
    log_px_exact: Tensor | None  # (N,) for the linear-Gaussian decoder
    refine_steps: Tensor  # (N,)
    refine_capped: Tensor  # (N,) bool
    refine_seconds: float
    log_px_seconds: float
    estimator: str
    num_samples: int
    loc: Tensor  # (N, D) the refined q*
    log_scale: Tensor  # (N, D)

    def per_point(self) -> dict[str, np.ndarray]:
        values = {
            "elbo_amortized": self.elbo_amortized,
            "elbo_inferred": self.elbo_inferred,
            "elbo_refined": self.elbo_refined,
            "log_px": self.log_px,
            "log_px_exact": self.log_px_exact,
            "refine_steps": self.refine_steps,
        }
        if self.elbo_amortized is not None:
            values["amortization_gap"] = self.elbo_refined - self.elbo_amortized
            values["inference_gap"] = self.log_px - self.elbo_amortized
        values["inferred_gap"] = self.elbo_refined - self.elbo_inferred
        values["approximation_gap"] = self.log_px - self.elbo_refined
        return {k: v.detach().cpu().numpy() for k, v in values.items() if v is not None}

    def summary(self) -> dict[str, Any]:
        points = self.per_point()
        result: dict[str, Any] = {}
        for name in (
            "elbo_amortized",
            "elbo_inferred",
            "elbo_refined",
            "log_px",
            "log_px_exact",
            "amortization_gap",
            "inferred_gap",
            "approximation_gap",
            "inference_gap",
        ):
            value = points.get(name)
            result[name] = None if value is None else float(value.mean())
            result[f"{name}_se"] = None if value is None else standard_error(value)
        result.update(
            num_points=int(self.elbo_refined.shape[0]),
            estimator=self.estimator,
            num_samples=self.num_samples,
            refine_steps_mean=float(points["refine_steps"].mean()),
            refine_steps_max=int(points["refine_steps"].max()),
            refine_num_capped=int(self.refine_capped.sum().item()),
            refine_seconds=self.refine_seconds,
            log_px_seconds=self.log_px_seconds,
        )
        return result


def standard_error(values: np.ndarray) -> float:
    """Standard error of the mean of per-point values (NaN for fewer than two)."""
    if values.shape[0] < 2:
        return math.nan
    return float(values.std(ddof=1) / math.sqrt(values.shape[0]))


def measure_gaps(
    model: LatentVariableModel,
    x: Tensor,
    config: EvalConfig,
    num_samples: int | None = None,
    progress: bool = False,
) -> GapReport:
    """Refine q on x, estimate log p(x), and collect the per-point values.

    `num_samples` overrides config.num_samples (cheap evaluations during training).
    """
    decoder, posterior = model.decoder, model.posterior
    num_samples = num_samples or config.num_samples
    budget = memory_budget_mb(x.device) if config.memory_budget_mb is None else config.memory_budget_mb
    with torch.no_grad():
        guess = posterior.guess(x)  # the encoder's q, or the prior for runs without one
        elbo_amortized = (
            chunked_elbo(decoder, x, *guess, config.batch_size, ELBO_SAMPLES) if posterior.amortized else None
        )
        if config.init == RefineInit.prior:
            start = gaussian.standard_normal_params(x.shape[0], decoder.latent_dim, x.device)
        else:
            start = guess
    inferred = map_points(lambda x: posterior.infer(decoder, x), x, size=config.batch_size)
    with torch.no_grad():
        elbo_inferred = chunked_elbo(decoder, x, *inferred, config.batch_size, ELBO_SAMPLES)
    refined = refine(decoder, x, *start, config.refine, config.batch_size, progress)
    started = time.perf_counter()
    with torch.no_grad():
        elbo_refined = chunked_elbo(
            decoder, x, refined.loc, refined.log_scale, config.batch_size, ELBO_SAMPLES
        )
        if config.estimator == Estimator.ais:
            log_px = ais_log_marginal(
                decoder,
                x,
                refined.loc,
                refined.log_scale,
                num_steps=config.ais.num_steps,
                num_leapfrog=config.ais.num_leapfrog,
                num_chains=config.ais.num_chains,
                step_size=config.ais.step_size,
                memory_budget_mb=budget,
            )
        else:
            log_px = iwae_log_marginal(
                decoder,
                x,
                refined.loc,
                refined.log_scale,
                num_samples,
                memory_budget_mb=budget,
            )
        exact = decoder.log_marginal(x) if hasattr(decoder, "log_marginal") else None
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    return GapReport(
        elbo_amortized=elbo_amortized,
        elbo_inferred=elbo_inferred,
        elbo_refined=elbo_refined,
        log_px=log_px,
        log_px_exact=exact,
        refine_steps=refined.steps,
        refine_capped=refined.capped,
        refine_seconds=refined.seconds,
        log_px_seconds=time.perf_counter() - started,
        estimator=config.estimator.value,
        num_samples=config.ais.num_chains if config.estimator == Estimator.ais else num_samples,
        loc=refined.loc,
        log_scale=refined.log_scale,
    )


def measure_row_gap(
    model: LatentVariableModel, x: Tensor, idx: Tensor, config: EvalConfig, num_samples: int = ELBO_SAMPLES
) -> Tensor:
    """L[q*_i] - L[q_i] per training point, (N,): how far q_i = posterior(x, idx) (a table
    row or the encoder's output) is from the best q of its family, decoder frozen.

    q* is refined from q_i; the difference is estimated with common random numbers
    (`local_fit.window_gain`), so it is far less noisy than two separate ELBO estimates.
    """
    with torch.no_grad():
        loc, log_scale = model.posterior(x, idx)
    refined = refine(model.decoder, x, loc, log_scale, config.refine, config.batch_size)
    now = torch.stack([refined.loc, refined.log_scale], dim=1)  # (N, 2, D)
    then = torch.stack([loc, log_scale], dim=1)
    with torch.no_grad():
        return map_points(
            lambda x, now, then: window_gain(model.decoder, x, now, then, num_samples)[0],
            x,
            now,
            then,
            size=config.batch_size,
        )
