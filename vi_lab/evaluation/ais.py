"""Annealed importance sampling of log p(x) with HMC transitions (Neal 2001; Wu et al. 2017).

The chains live in the coordinates of q's noise: u ~ N(0, I) and z = T(u; params), the
family's reparameterization (`Family.draw`, any family, flows included), so that the
target pulled back to u is log p(x, T(u)) + log |det dT/du| = log N(u) + w(u) with
w(u) = log p(x, z) - log q(z), the log importance weight. Chains start from N(0, I) (that
is, z ~ q) and move through the intermediate densities
    f_t(u) = log N(u; 0, I) + beta_t w(u),   0 = beta_0 < ... < beta_T = 1,
the geometric path (1 - beta_t) log q + beta_t log p(x, .) in z. The log weight of a chain
is sum_t (beta_t - beta_{t-1}) w(u_{t-1}), valid for any kernel that leaves f_t invariant;
here one HMC move (exact Metropolis-Hastings accept/reject) per step, in u: for a Gaussian
q, HMC in z preconditioned by q's covariance.

Step sizes. A kernel tuned on the chains' own past is no longer a fixed kernel that leaves
f_t invariant, and the weights lose their unbiasedness. So the step sizes are tuned on
separate pilot chains run through the same schedule first: the per-point step size moves by
+-2% a step towards a target acceptance rate pooled over the point's pilot chains (the rule
of Wu et al.'s BDMC code), and the estimating chains then use the pilots' step size of each
step, frozen. Given the pilots, every estimating chain runs fixed kernels, so
E[exp(log weight)] = p(x) exactly (Neal 2001, Sec. 2) and the estimate, logsumexp over
chains of log weights - log C, is a stochastic lower bound on log p(x) (Jensen). The pilots
cost `pilot_chains` / `num_chains` of the estimate's passes.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from vi_lab.chunking import bytes_per_pair, map_points
from vi_lab.evaluation.iwae import check_inputs, log_weights
from vi_lab.inference import gaussian
from vi_lab.inference.families import Family
from vi_lab.inference.objectives import Decoder

SCHEDULES = ("sigmoid", "geometric", "linear")


def seconds_per_pass(decoder: Decoder, family: Family, x: Tensor, params: Tensor, num_chains: int) -> float:
    """Seconds of one evaluation of w and its gradient for `num_chains` chains on the points x:
    the unit of AIS's work (the faster of two timings, the first paying for warm-up)."""
    u = torch.randn((num_chains, x.shape[0], family.latent_dim), dtype=x.dtype, device=x.device)
    timings = []
    for _ in range(2):
        started = time.perf_counter()
        _evaluate(decoder, family, x, params, u)
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        timings.append(time.perf_counter() - started)
    return min(timings)


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def annealing_schedule(num_steps: int, schedule: str = "sigmoid") -> list[float]:
    """beta_0 = 0, ..., beta_T = 1 as T + 1 increasing floats.

    sigmoid: normalized sigmoid(4 (2t/T - 1)) (Grosse et al. 2015); geometric: 1e-4 ** (1 - t/T)
    for t >= 1; linear: t / T.
    """
    t = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps  # (T + 1,)
    if schedule == "sigmoid":
        s = torch.sigmoid(4.0 * (2.0 * t - 1.0))
        betas = (s - s[0]) / (s[-1] - s[0])
    elif schedule == "geometric":
        betas = torch.where(t > 0, 1e-4 ** (1.0 - t), 0.0)
    elif schedule == "linear":
        betas = t
    else:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    return betas.tolist()


class _Chains(NamedTuple):
    u: Tensor  # (C, B, D) the chains, in q's noise coordinates
    w: Tensor  # (C, B) log p(x, z) - log q(z) at z = T(u)
    log_base: Tensor  # (C, B) log N(u; 0, I)
    grad_w: Tensor  # (C, B, D) grad_u w


def _evaluate(decoder: Decoder, family: Family, x: Tensor, params: Tensor, u: Tensor) -> _Chains:
    """w and its gradient at u, taken w.r.t. u only (parameters get no .grad)."""
    with torch.enable_grad():
        u = u.detach().requires_grad_(True)
        w = log_weights(decoder, family, x, params, u)  # (C, B)
        (grad,) = torch.autograd.grad(w.sum(), u)
    u = u.detach()
    return _Chains(u, w.detach(), gaussian.log_standard_normal(u), grad)


def _hmc_move(
    decoder: Decoder,
    family: Family,
    x: Tensor,
    params: Tensor,
    beta: float,
    eps: Tensor,
    num_leapfrog: int,
    chains: _Chains,
) -> tuple[_Chains, Tensor]:
    """One HMC move leaving f_beta invariant; returns the new chains and the acceptances (C, B)."""

    def grad_f(c: _Chains) -> Tensor:
        return beta * c.grad_w - c.u  # (C, B, D)

    def f(c: _Chains) -> Tensor:
        return c.log_base + beta * c.w  # (C, B)

    # a random step-size jitter, drawn independently of the state, breaks the periodic
    # orbits of fixed-length trajectories on near-Gaussian targets without breaking invariance
    eps = eps * (0.8 + 0.4 * torch.rand_like(chains.w)[..., None])  # (C, B, 1)
    p0 = torch.randn_like(chains.u)  # (C, B, D)
    p = p0 + 0.5 * eps * grad_f(chains)
    proposal = chains
    for step in range(num_leapfrog):
        proposal = _evaluate(decoder, family, x, params, proposal.u + eps * p)
        p = p + (eps if step < num_leapfrog - 1 else 0.5 * eps) * grad_f(proposal)
    log_accept = f(proposal) - 0.5 * p.pow(2).sum(-1) - f(chains) + 0.5 * p0.pow(2).sum(-1)  # (C, B)
    accept = torch.rand_like(log_accept).log() < log_accept  # (C, B); NaN proposals are rejected
    kept = [
        torch.where(accept[..., None] if new.dim() == 3 else accept, new, old)
        for new, old in zip(proposal, chains, strict=True)
    ]
    return _Chains(*kept), accept


def anneal(
    decoder: Decoder,
    family: Family,
    x: Tensor,
    params: Tensor,
    betas: list[float],
    num_leapfrog: int,
    num_chains: int,
    step_sizes: Tensor | float,
    target_acceptance: float,
    start: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Run num_chains chains per point through the schedule betas; returns their log weights
    sum_t (beta_t - beta_{t-1}) w(u_{t-1}), (C, B), and the step size of each of the T - 1
    moves of each point, (T - 1, B).

    `step_sizes` (T - 1, B) are used as given (frozen kernels); a float starts every point's
    step size there and adapts it to the chains' own acceptance rate (the pilots). The chains
    start at `start` (C, B, D), in q's noise coordinates, else from N(0, I) (z ~ q). The
    schedule may run backwards (from 1 to 0: the reverse chains of `bdmc.py`).
    """
    if start is None:
        start = torch.randn((num_chains, x.shape[0], family.latent_dim), dtype=x.dtype, device=x.device)
    chains = _evaluate(decoder, family, x, params, start)
    log_w = torch.zeros_like(chains.w)  # (C, B)
    frozen = isinstance(step_sizes, Tensor)
    eps = torch.full((x.shape[0],), 0.0 if frozen else step_sizes, dtype=x.dtype, device=x.device)  # (B,)
    used = []
    for t, (beta_prev, beta) in enumerate(itertools.pairwise(betas[:-1])):  # a move for each 0 < beta_t < 1
        log_w += (beta - beta_prev) * chains.w
        if frozen:
            eps = step_sizes[t]
        chains, accept = _hmc_move(decoder, family, x, params, beta, eps[None, :, None], num_leapfrog, chains)
        used.append(eps)
        if not frozen:
            rate = accept.to(x.dtype).mean(0)  # (B,)
            eps = eps * torch.where(rate > target_acceptance, 1.02, 0.98)
    log_w += (betas[-1] - betas[-2]) * chains.w
    return log_w, torch.stack(used) if used else x.new_zeros(0, x.shape[0])


def _ais_chunk(
    decoder: Decoder,
    family: Family,
    x: Tensor,
    params: Tensor,
    betas: list[float],
    num_leapfrog: int,
    num_chains: int,
    pilot_chains: int,
    step_size: float,
    target_acceptance: float,
) -> Tensor:
    """AIS estimate (B,) for the points of one chunk: pilots tune the step sizes, then the
    estimating chains (all batched) run with them frozen."""
    run = (decoder, family, x, params, betas, num_leapfrog)
    _, step_sizes = anneal(*run, pilot_chains, step_size, target_acceptance)
    log_w, _ = anneal(*run, num_chains, step_sizes, target_acceptance)
    return torch.logsumexp(log_w, 0) - math.log(num_chains)  # (B,)


@torch.no_grad()
def ais_log_marginal(
    decoder: Decoder,
    family: Family,
    x: Tensor,
    params: Tensor,
    num_steps: int = 500,
    num_leapfrog: int = 10,
    num_chains: int = 16,
    pilot_chains: int = 4,
    step_size: float = 0.05,
    target_acceptance: float = 0.65,
    memory_budget_mb: float = 512.0,
    schedule: str = "sigmoid",
    report: Callable[[str], None] | None = None,
) -> Tensor:
    """Per-point AIS estimate of log p(x) starting from the q's of params (B, P), (B,), with step
    sizes tuned on `pilot_chains` separate chains per point (`step_size` their start).

    Points are chunked so that num_chains * b * `bytes_per_pair(keep_graph=True)` fits the
    budget (at least one point per chunk); chains are never split. `report`, where given,
    receives one line with the cost before the work starts (`estimate_seconds`).
    """
    counts = (num_steps, num_leapfrog, num_chains, pilot_chains)
    for name, value in zip(("num_steps", "num_leapfrog", "num_chains", "pilot_chains"), counts, strict=True):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if not step_size > 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    if not 0 < target_acceptance < 1:
        raise ValueError(f"target_acceptance must lie in (0, 1), got {target_acceptance}")
    check_inputs(decoder, family, x, params, memory_budget_mb)
    betas = annealing_schedule(num_steps, schedule)
    pair = max(num_chains, pilot_chains) * bytes_per_pair(decoder, x, keep_graph=True)
    point_chunk = max(1, int(memory_budget_mb * 2**20) // pair)
    settings = (betas, num_leapfrog, num_chains, pilot_chains, step_size, target_acceptance)
    if report is not None:
        passes = math.ceil(x.shape[0] / point_chunk) * (1 + (len(betas) - 2) * num_leapfrog)
        chunk = (decoder, family, x[:point_chunk], params[:point_chunk])
        seconds = passes * (seconds_per_pass(*chunk, num_chains) + seconds_per_pass(*chunk, pilot_chains))
        report(
            f"AIS: {x.shape[0]} points x ({pilot_chains} pilot + {num_chains}) chains, {num_steps} steps "
            f"of {num_leapfrog} leapfrog steps: {2 * passes:,} gradient passes over chunks of "
            f"{min(point_chunk, x.shape[0])} points, about {_duration(seconds)} (from timed passes)"
        )
    return map_points(
        lambda x, params: _ais_chunk(decoder, family, x, params.detach(), *settings),
        x,
        params,
        size=point_chunk,
    )  # (B,)
