"""Per-datapoint variational inference: fit (loc, log_scale) of many points at once.

The decoder is frozen: the reparameterization gradient comes from
`objectives.elbo_and_gradient` (autograd through the decoder with z as the only leaf,
the Gaussian parts in closed form), so no decoder `.grad` is ever written.
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
from vi_lab.objectives import Decoder, elbo_and_gradient

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
    """Maximize each row's ELBO with the decoder frozen; returns new rows (inputs untouched).

    Rows are masked arithmetically (weight 0 for stopped rows) rather than by indexing,
    so every step is the same few fused tensor operations whatever the mix of rows.
    """
    num_rows = x.shape[0]
    params = rows.params.clone()
    exp_avg, exp_avg_sq, step = rows.exp_avg.clone(), rows.exp_avg_sq.clone(), rows.step.clone()
    active = torch.ones(num_rows, device=x.device)  # (N,) 1 while a row is optimized, then 0
    stall = torch.zeros(num_rows, device=x.device)  # steps since the running average improved
    lr = torch.full((num_rows,), config.lr, device=x.device)
    decays_left = torch.full((num_rows,), float(config.num_decays), device=x.device)
    warmup = math.ceil(1.0 / config.smoothing)  # steps before the running average means anything

    for t in range(config.max_steps):
        with torch.no_grad():
            estimate, grad_loc, grad_log_scale = elbo_and_gradient(
                decoder, x, params[:, 0], params[:, 1], config.num_samples
            )  # (N,), (N, D), (N, D)
            grad = torch.stack([grad_loc, grad_log_scale], dim=1)  # (N, 2, D)
            if t == 0:
                first = average = estimate
            else:
                average = torch.lerp(average, estimate, config.smoothing)
            if t < warmup:
                best = average
            else:
                improved = average > best + config.tol
                best = torch.where(improved, average, best)
                stall = (stall + 1).masked_fill_(improved, 0)

            # Adam ascent; a stopped row has weight 0 in every update, so nothing of it moves.
            live = active[:, None, None]  # (N, 1, 1)
            step += active
            exp_avg.lerp_(grad, live * (1 - BETA1))
            exp_avg_sq.lerp_(grad.square_(), live * (1 - BETA2))
            # Kingma & Ba (2015), Algorithm 1's efficient form: both bias corrections in the step size.
            count = step.clamp(min=1)
            step_size = active * lr * torch.sqrt(1 - torch.pow(BETA2, count)) / (1 - torch.pow(BETA1, count))
            params.addcdiv_(exp_avg * step_size[:, None, None], exp_avg_sq.sqrt().add_(EPS))  # (N, 2, D)

            if t >= warmup:
                plateau = stall >= config.patience
                if config.num_decays == 0:
                    active.masked_fill_(plateau, 0)
                else:
                    stop = plateau & (decays_left == 0)
                    decay = plateau & ~stop
                    lr = torch.where(decay, lr * 0.5, lr)
                    decays_left -= decay.float()
                    stall.masked_fill_(decay, 0)
                    active.masked_fill_(stop, 0)
        if t >= warmup and not active.any():
            break
    state = RowState(params, exp_avg, exp_avg_sq, step)
    return FitResult(state, first, average, (step - rows.step).long(), active.bool())
