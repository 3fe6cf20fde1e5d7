"""Per-datapoint variational inference: fit (loc, log_scale) of many points at once.

The decoder is frozen: gradients are taken with respect to the variational
parameters only (`torch.autograd.grad`), so no decoder `.grad` is ever written.
Every point (row) has its own Adam state (moments and step count), so a row can stop
while others go on, and a row's next visit continues where its last one stopped
(lecture 004's coordinate ascent; Cremer et al. 2018's test-time refinement).

Plateau rule, per row: after a warm-up of 1/smoothing steps, an exponential moving
average of its ELBO estimate must beat its best value by more than `tol` nats within
`patience` steps. A row that fails halves its own learning rate (Monte Carlo noise then
costs step size, never progress, and the smaller steps remove the optimizer's jitter
near the optimum); after `num_decays` halvings the next plateau stops it. `max_steps`
caps all rows. The loop runs over steps only, never over points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from vi_lab.config import LocalFitConfig
from vi_lab.objectives import Decoder, elbo

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


@dataclass
class RowState:
    """Variational parameters and Adam state of a set of rows."""

    params: Tensor  # (N, 2, D): loc and log_scale
    exp_avg: Tensor  # (N, 2, D)
    exp_avg_sq: Tensor  # (N, 2, D)
    step: Tensor  # (N,) Adam steps each row has taken

    @classmethod
    def prior(cls, num_rows: int, latent_dim: int, device: torch.device) -> RowState:
        """Rows at q = p(z) = N(0, I) with fresh optimizer state."""
        zeros = torch.zeros(num_rows, 2, latent_dim, device=device)
        return cls(zeros, zeros.clone(), zeros.clone(), torch.zeros(num_rows, device=device))

    @classmethod
    def start_at(cls, loc: Tensor, log_scale: Tensor) -> RowState:
        """Rows at the given q with fresh optimizer state (e.g. an encoder's guess)."""
        params = torch.stack([loc, log_scale], dim=1).detach()  # (N, 2, D)
        zeros = torch.zeros_like(params)
        return cls(params, zeros, zeros.clone(), torch.zeros(params.shape[0], device=params.device))

    @property
    def loc(self) -> Tensor:
        return self.params[:, 0]

    @property
    def log_scale(self) -> Tensor:
        return self.params[:, 1]

    def rows(self, idx: Tensor) -> RowState:
        return RowState(self.params[idx], self.exp_avg[idx], self.exp_avg_sq[idx], self.step[idx])

    def put_rows(self, idx: Tensor, rows: RowState) -> None:
        self.params[idx] = rows.params
        self.exp_avg[idx] = rows.exp_avg
        self.exp_avg_sq[idx] = rows.exp_avg_sq
        self.step[idx] = rows.step


@dataclass
class FitResult:
    state: RowState  # the rows after fitting
    first_elbo: Tensor  # (N,) ELBO estimate at the start
    last_elbo: Tensor  # (N,) smoothed ELBO estimate at the end
    steps: Tensor  # (N,) steps each row took
    capped: Tensor  # (N,) bool: still improving when max_steps ran out


def fit_local(decoder: Decoder, x: Tensor, rows: RowState, config: LocalFitConfig) -> FitResult:
    """Maximize each row's ELBO with the decoder frozen; returns new rows (inputs untouched)."""
    params = rows.params.clone()
    exp_avg, exp_avg_sq, step = rows.exp_avg.clone(), rows.exp_avg_sq.clone(), rows.step.clone()
    active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)  # (N,)
    stall = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    steps_taken = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    warmup = math.ceil(1.0 / config.smoothing)  # steps before the running average means anything
    lr = torch.full((x.shape[0], 1, 1), config.lr, device=x.device)  # (N, 1, 1)
    decays_left = torch.full_like(stall, config.num_decays)

    for t in range(config.max_steps):
        with torch.enable_grad():
            params.requires_grad_(True)
            estimate = elbo(decoder, x, params[:, 0], params[:, 1], config.num_samples)["elbo"]  # (N,)
            (grad,) = torch.autograd.grad(estimate.sum(), params)
        params = params.detach()
        estimate = estimate.detach()
        with torch.no_grad():
            if t == 0:
                first, average, best = estimate, estimate, estimate
            else:
                average = torch.lerp(average, estimate, config.smoothing)
            improved = (average > best + config.tol) | (t < warmup)
            best = torch.where(improved, average, best)
            stall = torch.where(improved, 0, stall + 1)
            plateau = stall >= config.patience

            # Adam ascent on the active rows only.
            live = active[:, None, None]
            step = step + active
            exp_avg = torch.where(live, torch.lerp(exp_avg, grad, 1 - BETA1), exp_avg)
            exp_avg_sq = torch.where(live, torch.lerp(exp_avg_sq, grad.square(), 1 - BETA2), exp_avg_sq)
            bias1 = 1 - BETA1 ** step.clamp(min=1)[:, None, None]
            bias2 = 1 - BETA2 ** step.clamp(min=1)[:, None, None]
            update = (exp_avg / bias1) / ((exp_avg_sq / bias2).sqrt() + EPS)
            params = torch.where(live, params + lr * update, params)
            steps_taken += active
            active = active & ~(plateau & (decays_left == 0))
            decay = plateau & active
            lr = torch.where(decay[:, None, None], lr * 0.5, lr)
            decays_left = decays_left - decay.long()
            stall = torch.where(decay, 0, stall)
        if not active.any():
            break
    state = RowState(params, exp_avg, exp_avg_sq, step)
    return FitResult(state, first, average, steps_taken, active)
