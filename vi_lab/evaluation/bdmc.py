"""Bidirectional Monte Carlo (Grosse, Ghahramani & Adams 2015): log p(x) sandwiched, on
data simulated from the model.

For x simulated from the model (z ~ p(z), x ~ p(x | z)), the z that generated x is an exact
sample of p(z | x). AIS forward from the prior (`ais.anneal`) gives a stochastic lower bound
on log p(x); the same annealing run backwards, from that exact sample to the prior, gives
weights whose expectation is 1 / p(x), so minus the log of their mean is a stochastic upper
bound (Jensen; Grosse et al. 2015, Sec. 4). The width upper - lower bounds the error of
both and shrinks to zero as the number of annealing steps grows. Both directions use the
step sizes that pilot chains tuned on the forward schedule (`ais.py`), frozen, the reverse
pass taking them in reverse order.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from vi_lab.evaluation.ais import anneal, annealing_schedule
from vi_lab.inference.families import Diagonal


class Sandwich(NamedTuple):
    lower: Tensor  # (B,) forward AIS: a stochastic lower bound on log p(x)
    upper: Tensor  # (B,) reverse AIS from the exact posterior sample: a stochastic upper bound


def simulate(decoder: torch.nn.Module, num_points: int) -> tuple[Tensor, Tensor]:
    """(x (B, ...), z (B, D)) with z ~ N(0, I) and x ~ p(x | z): data whose posterior samples are known."""
    z = torch.randn(num_points, decoder.latent_dim)
    with torch.no_grad():
        return decoder.sample(z), z


@torch.no_grad()
def bdmc_bounds(
    decoder: torch.nn.Module,
    x: Tensor,
    z: Tensor,
    num_steps: int = 500,
    num_leapfrog: int = 10,
    num_chains: int = 4,
    pilot_chains: int = 4,
    step_size: float = 0.05,
    target_acceptance: float = 0.65,
    schedule: str = "sigmoid",
) -> Sandwich:
    """The BDMC sandwich of each point x_b, given z_b, an exact sample of p(z | x_b) (`simulate`).

    Both directions anneal between the prior and the posterior (q = p(z), whose noise
    coordinates are z itself) with `num_chains` chains per point; every reverse chain starts
    at z_b. No chunking: meant for a few hundred simulated points.
    """
    if z.shape != (x.shape[0], decoder.latent_dim):
        raise ValueError(f"z must be (num_points, {decoder.latent_dim}), one exact sample per point")
    prior = Diagonal(decoder.latent_dim)
    params = prior.prior(x.shape[0], x.device).to(x.dtype)
    betas = annealing_schedule(num_steps, schedule)
    run = (decoder, prior, x, params)
    _, step_sizes = anneal(*run, betas, num_leapfrog, pilot_chains, step_size, target_acceptance)
    forward, _ = anneal(*run, betas, num_leapfrog, num_chains, step_sizes, target_acceptance)
    start = z.to(x.dtype).expand(num_chains, -1, -1)  # (C, B, D)
    backward, _ = anneal(
        *run, betas[::-1], num_leapfrog, num_chains, step_sizes.flip(0), target_acceptance, start=start
    )
    log_chains = math.log(num_chains)
    return Sandwich(torch.logsumexp(forward, 0) - log_chains, -(torch.logsumexp(backward, 0) - log_chains))
