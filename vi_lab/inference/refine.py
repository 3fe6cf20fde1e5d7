"""Test-time refinement: the best q of the family for each point, decoder frozen.

Cremer, Li & Duvenaud (2018) measure the amortization gap by optimizing each point's
q (its family's params) from the encoder's output (or from the prior, for runs without an
encoder) until the ELBO stops improving. This is the per-datapoint inner loop of
`local_fit.py` run to convergence, in chunks of points so memory stays bounded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from vi_lab.chunking import map_points
from vi_lab.config import LocalFitConfig
from vi_lab.inference.families import Family
from vi_lab.inference.local_fit import RowState, fit_local
from vi_lab.inference.objectives import Decoder


@dataclass
class Refined:
    params: Tensor  # (N, P) each point's q*
    steps: Tensor  # (N,) optimizer steps each point took
    capped: Tensor  # (N,) bool: still improving at max_steps
    seconds: float


def refine(
    decoder: Decoder,
    family: Family,
    x: Tensor,
    params: Tensor,
    config: LocalFitConfig,
    batch_size: int = 500,
    progress: bool = False,
    compiled: bool = False,
) -> Refined:
    """Fit per-point q starting at params (N, P); batched, no loop over points.

    `compiled` is `fit_local`'s: steps through torch.compile."""
    started = time.perf_counter()

    def fit(x: Tensor, params: Tensor) -> tuple[Tensor, ...]:
        done = fit_local(decoder, family, x, RowState.start_at(params), config, compiled=compiled)
        return done.state.params, done.steps, done.capped

    params, steps, capped = map_points(fit, x, params, size=batch_size, progress=progress, desc="refine")
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    return Refined(params, steps, capped, seconds=time.perf_counter() - started)
