"""Per-datapoint variational inference: fit the q's of many points at once.

A q is a family's params, one row (P,) per point (`vi_lab.inference.families`). The
decoder is frozen: the reparameterization gradient comes from the family's
`elbo_and_gradient` (for the diagonal Gaussian, autograd through the decoder with z as the
only leaf and the Gaussian parts in closed form), so no decoder `.grad` is ever written.
Every point (row) has its own Adam state (moments and step count, Kingma & Ba 2015),
so a row can stop while others go on, and a row's next visit can continue where its
last one stopped: the coordinate ascent of variational inference (Bishop 2006, §10.1.1)
with a stochastic inner loop (Hoffman et al. 2013), and the test-time refinement of
Cremer, Li & Duvenaud (2018).

Stopping rule, per row. Every `check_every` steps a row's gain over the last window,
    g = L(q_now) - L(q_then),
is estimated with common random numbers: the same `check_samples` fresh draws
eps_1..M are pushed through both q's (z = T(eps; params), the family's map), so the Monte
Carlo noise that the two ELBOs share cancels (the paired comparison of Glasserman & Yao
1992). One window's realized gain also carries the random walk of the noisy steps, so every
decision rests on the last W = `stop_windows` windows at the current step size: their mean
gain m and its standard error s (from their spread, path noise included).
- Stop, with no halvings left: m + t_k * s < tol, a one-sided t-test that the drift is below
  `tol`, at the row's k-th such decision of the visit with t_k = t_{W-1}(1 - alpha_k),
  Student's t quantile with W - 1 degrees of freedom at level alpha_k = alpha * 6 / (pi^2 k^2),
  alpha = `error_rate`. The levels sum to alpha, so by the union bound (Bonferroni with
  unequal shares, spent first where a settled row stops) a row whose window gains are
  independent normals with mean at or above `tol` stops anywhere in the visit with
  probability at most alpha, however long the visit (`benchmarks/stopping.py` measures it;
  `tests/inference/test_local_fit.py` checks it).
- Halve the learning rate (at most `num_decays` times; the windows then start afresh):
  m < tol and m - t_1 * s <= 0, the same windows and the quantile of a first stop decision
  showing no progress. Smaller steps remove Adam's jitter around the optimum, whose
  window-to-window spread at the first step size is far above `tol`, so this decision cannot
  wait for the drift to be shown below `tol`; it carries no bound of its own (a row gaining
  about `tol` per window may be halved, and the stop's bound then holds at the new step
  size), but a row whose measured mean gain reaches `tol` never is.
No row is halved before W windows at a step size, nor stops before (num_decays + 1) * W.
`max_steps` caps every row. The loop runs over steps only, never over points; a check
costs one forward pass with 2 * check_samples samples and no backward pass, and a visit
too short to reach a decision skips the checks.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from scipy import stats
from torch import Tensor

from vi_lab.config import LocalFitConfig
from vi_lab.inference.families import Family
from vi_lab.inference.objectives import Decoder
from vi_lab.runtime import compiled_function

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


@dataclass
class RowState:
    """Variational parameters and Adam state of a set of rows."""

    params: Tensor  # (N, P): each row's q, in its family's parametrization
    exp_avg: Tensor  # (N, P)
    exp_avg_sq: Tensor  # (N, P)
    step: Tensor  # (N,) Adam steps each row has taken

    @classmethod
    def prior(cls, num_rows: int, family: Family, device: torch.device) -> RowState:
        """Rows at q = p(z) = N(0, I) with fresh optimizer state."""
        return cls.start_at(family.prior(num_rows, device))

    @classmethod
    def start_at(cls, params: Tensor) -> RowState:
        """Rows at the given q with fresh optimizer state (e.g. an encoder's guess)."""
        params = params.detach().clone()  # (N, P)
        zeros = torch.zeros_like(params)
        return cls(params, zeros, zeros.clone(), torch.zeros(params.shape[0], device=params.device))

    def rows(self, idx: Tensor) -> RowState:
        return RowState(self.params[idx], self.exp_avg[idx], self.exp_avg_sq[idx], self.step[idx])

    def fresh(self) -> RowState:
        """The same q with the optimizer state of a first visit."""
        return RowState.start_at(self.params)

    def put_rows(self, idx: Tensor, rows: RowState) -> None:
        self.params[idx] = rows.params
        self.exp_avg[idx] = rows.exp_avg
        self.exp_avg_sq[idx] = rows.exp_avg_sq
        self.step[idx] = rows.step


@dataclass
class FitResult:
    state: RowState  # the rows after fitting
    first_elbo: Tensor  # (N,) ELBO estimate at the start
    last_elbo: Tensor  # (N,) ELBO estimate at the last step
    steps: Tensor  # (N,) steps each row took
    capped: Tensor  # (N,) bool: still going when max_steps ran out


def window_gain(
    decoder: Decoder,
    family: Family,
    x: Tensor,
    now: Tensor,
    then: Tensor,
    num_samples: int,
    beta: float = 1.0,
) -> Tensor:
    """Estimated ELBO(now) - ELBO(then) per row, (N,).

    `now` and `then` are (N, P) params; both are scored on the same draws of eps
    (common random numbers), in one forward pass of 2 * num_samples samples.
    """
    eps = torch.randn((num_samples, now.shape[0], family.latent_dim), dtype=now.dtype, device=now.device)
    drawn_now, drawn_then = family.draw(now, eps), family.draw(then, eps)  # (M, N, D) samples each
    log_lik = decoder.log_prob(x, torch.cat([drawn_now.z, drawn_then.z]))  # (2M, N)
    kl_diff = drawn_now.kl - drawn_then.kl  # (N,) in closed form, else (M, N)
    return (log_lik[:num_samples] - log_lik[num_samples:] - beta * kl_diff).mean(0)


def checks_per_visit(config: LocalFitConfig) -> int:
    """The checks of one visit: every `check_every` steps before the last."""
    return (config.max_steps - 1) // config.check_every


@functools.cache
def _t_quantiles(error_rate: float, stop_windows: int, num_decisions: int) -> tuple[float, ...]:
    """t_{W-1}(1 - alpha_k) for k = 1..num_decisions, alpha_k = alpha * 6 / (pi^2 k^2): the error
    rate spent on a row's k-th stop decision of a visit, alpha = `error_rate`. The alpha_k sum
    to alpha, so a union bound over the visit's decisions (Bonferroni with unequal shares) holds
    whatever their number. Cached: a training run asks for the same table at every visit."""
    levels = [error_rate * 6 / (math.pi**2 * k**2) for k in range(1, num_decisions + 1)]
    return tuple(float(t) for t in stats.t.ppf([1 - level for level in levels], stop_windows - 1))


def decision_thresholds(config: LocalFitConfig) -> Tensor:
    """t_{W-1}(1 - alpha_k) for k = 1..(checks of a visit), (K,) float64: how many standard
    errors of the mean window gain must separate it from `tol` at a row's k-th stop decision,
    W = `stop_windows` (a one-sided t-test at level alpha_k, `_t_quantiles`)."""
    quantiles = _t_quantiles(config.error_rate, config.stop_windows, max(1, checks_per_visit(config)))
    return torch.tensor(quantiles, dtype=torch.float64)


def adam_step(
    params: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: Tensor,
    lr: Tensor,
    active: Tensor,
    scales: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One Adam ascent step of each row: new (params, exp_avg, exp_avg_sq, step), inputs untouched.

    params, grad and the moments are (N, P); step, lr and active are (N,); `scales` (P,), where
    given, multiplies each parameter's step (`Family.step_scales`). A row with
    active = 0 keeps its parameters and state. Kingma & Ba (2015), Algorithm 1, in its
    efficient form (both bias corrections in the step size). Out of place, so that autograd
    can differentiate through it (`unrolled.py`).
    """
    live = active[:, None]  # (N, 1)
    step = step + active
    exp_avg = exp_avg.lerp(grad, live * (1 - BETA1))
    exp_avg_sq = exp_avg_sq.lerp(grad.square(), live * (1 - BETA2))
    count = step.clamp(min=1)
    step_size = active * lr * torch.sqrt(1 - torch.pow(BETA2, count)) / (1 - torch.pow(BETA1, count))
    update = exp_avg * step_size[:, None] if scales is None else exp_avg * step_size[:, None] * scales
    params = params.addcdiv(update, exp_avg_sq.sqrt() + EPS)  # (N, P)
    return params, exp_avg, exp_avg_sq, step


def ascent_step(
    decoder: Decoder,
    family: Family,
    x: Tensor,
    params: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: Tensor,
    active: Tensor,
    lr: Tensor,
    eps: Tensor,
    beta: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One inner-loop step of every row at noise eps (S, N, D): the reparameterization
    gradient, then `adam_step`; inputs untouched.

    Returns (objective estimate recon - beta * KL (N,), params, exp_avg, exp_avg_sq, step)
    after the step. Pure tensor code with the noise given: the function that
    `runtime.compiled_function` compiles.
    """
    recon, kl, grad = family.elbo_and_gradient(decoder, x, params, eps, beta)  # (N,), (N,), (N, P)
    # a stopped row has weight 0 in every update, so nothing of it moves
    scales = family.step_scales(params.device)
    return recon - beta * kl, *adam_step(params, grad, exp_avg, exp_avg_sq, step, lr, active, scales)


def fit_local(
    decoder: Decoder,
    family: Family,
    x: Tensor,
    rows: RowState,
    config: LocalFitConfig,
    beta: float = 1.0,
    compiled: bool = False,
) -> FitResult:
    """Maximize each row's ELBO with the decoder frozen; returns new rows (inputs untouched).

    `beta` weights the KL term of the objective (KL warm-up during training; 1 for every
    reported bound). Rows are masked arithmetically (weight 0 for stopped rows) rather
    than by indexing, so every step is the same few fused tensor operations whatever the
    mix of rows. Once most rows of the working set have stopped (at a check), the working
    set is compacted to the rows still going, so that stopped rows cost no decoder passes:
    the decoder must score row b of x with z[:, b] alone (per-row data such as an
    observed-pixel mask travels in x's rows, never in the decoder).
    `compiled` runs each step through `runtime.compiled_function` (torch.compile; CUDA
    graphs on a GPU): the same numbers up to floating-point rounding.
    """
    num_rows = x.shape[0]
    ascent = compiled_function(ascent_step, x.device) if compiled else ascent_step
    beta_t = torch.tensor(float(beta), device=x.device)
    result = RowState(rows.params.clone(), rows.exp_avg.clone(), rows.exp_avg_sq.clone(), rows.step.clone())
    last = torch.empty(num_rows, dtype=rows.params.dtype, device=x.device)  # (N,) last ELBO estimates
    capped = torch.zeros(num_rows, dtype=torch.bool, device=x.device)
    where = torch.arange(num_rows, device=x.device)  # the working rows' places among all rows
    params, exp_avg, exp_avg_sq, step = result.params, result.exp_avg, result.exp_avg_sq, result.step
    active = torch.ones(num_rows, device=x.device)  # (n,) 1 while a row is optimized, then 0
    lr = torch.full((num_rows,), config.lr, device=x.device)
    decays_left = torch.full((num_rows,), float(config.num_decays), device=x.device)
    anchor = params.clone()  # (n, P) the rows at the start of the current window
    gains = torch.zeros(num_rows, config.stop_windows, device=x.device)  # recent window gains
    windows = torch.zeros(num_rows, device=x.device)  # windows since the last step-size change
    num_checks = 0
    thresholds = decision_thresholds(config).to(device=x.device, dtype=params.dtype)  # (K,)
    attempts = torch.zeros(num_rows, dtype=torch.long, device=x.device)  # stop decisions so far
    # A visit too short for any decision (fewer than `stop_windows` windows) takes its whole
    # budget and skips the checks' cost.
    can_decide = checks_per_visit(config) >= config.stop_windows

    def store() -> None:
        """Write the working rows back among all rows."""
        result.put_rows(where, RowState(params, exp_avg, exp_avg_sq, step))
        last[where] = estimate
        capped[where] = active.bool()

    for t in range(config.max_steps):
        with torch.no_grad():
            eps = torch.randn(
                (config.num_samples, params.shape[0], family.latent_dim), dtype=params.dtype, device=x.device
            )
            estimate, params, exp_avg, exp_avg_sq, step = ascent(
                decoder, family, x, params, exp_avg, exp_avg_sq, step, active, lr, eps, beta_t
            )
            if t == 0:
                first = estimate

            if can_decide and (t + 1) % config.check_every == 0 and t + 1 < config.max_steps:
                num_checks += 1
                gains[:, num_checks % config.stop_windows] = window_gain(
                    decoder, family, x, params, anchor, config.check_samples, beta
                )
                anchor.copy_(params)
                windows += 1
                # The drift of the last windows (path noise included) and its standard error
                drift, drift_se = gains.mean(1), gains.std(1) / math.sqrt(config.stop_windows)
                judged = (windows >= config.stop_windows) & active.bool()
                # halve: the drift is below tol and not shown to be positive, at the quantile of
                # a first stop decision; stop: it is shown to be below tol at the row's k-th
                # decision's quantile
                flat = (drift < config.tol) & (drift - thresholds[0] * drift_se <= 0)
                decay = judged & flat & (decays_left > 0)
                deciding = judged & (decays_left == 0)
                attempts += deciding.long()
                threshold = thresholds[(attempts - 1).clamp(0, thresholds.shape[0] - 1)]  # (n,)
                stop = deciding & (drift + threshold * drift_se < config.tol)
                lr = torch.where(decay, lr * 0.5, lr)
                decays_left -= decay.float()
                windows.masked_fill_(decay, 0)
                active.masked_fill_(stop, 0)
                num_active = int(active.sum())
                if num_active == 0:
                    break
                if 2 * num_active <= active.shape[0]:  # most working rows are done
                    store()
                    keep = active.nonzero().squeeze(1)  # (n',)
                    where, x = where[keep], x[keep]
                    params, exp_avg, exp_avg_sq = params[keep], exp_avg[keep], exp_avg_sq[keep]
                    step, active, lr, decays_left = step[keep], active[keep], lr[keep], decays_left[keep]
                    anchor, gains, windows, attempts = (
                        anchor[keep],
                        gains[keep],
                        windows[keep],
                        attempts[keep],
                    )
    store()
    return FitResult(result, first, last, (result.step - rows.step).long(), capped)
