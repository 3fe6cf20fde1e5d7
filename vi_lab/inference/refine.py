"""Test-time refinement: the best q of the family for each point, decoder frozen.

Cremer, Li & Duvenaud (2018) measure the amortization gap by optimizing each point's
(loc, log_scale) from the encoder's output (or from the prior, for runs without an
encoder) until the ELBO stops improving. This is the per-datapoint inner loop of
`local_fit.py` run to convergence, in chunks of points so memory stays bounded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from vi_lab.config import LocalFitConfig
from vi_lab.inference.local_fit import RowState, fit_local
from vi_lab.inference.objectives import Decoder
from vi_lab.progress import progress_bar


@dataclass
class Refined:
    loc: Tensor  # (N, D)
    log_scale: Tensor  # (N, D)
    steps: Tensor  # (N,) optimizer steps each point took
    capped: Tensor  # (N,) bool: still improving at max_steps
    seconds: float


def refine(
    decoder: Decoder,
    x: Tensor,
    loc: Tensor,
    log_scale: Tensor,
    config: LocalFitConfig,
    batch_size: int = 500,
    progress: bool = False,
    compiled: bool = False,
) -> Refined:
    """Fit per-point q starting at (loc, log_scale); batched, no loop over points.

    `compiled` runs the steps through torch.compile (see `fit_local`)."""
    started = time.perf_counter()
    chunks = []
    for begin in progress_bar(range(0, x.shape[0], batch_size), desc="refine", enabled=progress, leave=False):
        end = begin + batch_size
        rows = RowState.start_at(loc[begin:end], log_scale[begin:end])
        chunks.append(fit_local(decoder, x[begin:end], rows, config, compiled=compiled))
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    return Refined(
        loc=torch.cat([fit.state.loc for fit in chunks]),
        log_scale=torch.cat([fit.state.log_scale for fit in chunks]),
        steps=torch.cat([fit.steps for fit in chunks]),
        capped=torch.cat([fit.capped for fit in chunks]),
        seconds=time.perf_counter() - started,
    )
