"""The importance-weighted estimate of log p(x) (Burda, Grosse & Salakhutdinov 2016, IWAE).

    log p̂(x) = logsumexp_k [log p(x, z_k) - log q(z_k)] - log K,   z_k ~ q = N(loc, diag scale^2)

is a stochastic lower bound, E[log p̂(x)] <= log p(x), that tightens as K grows. The
work is chunked over points and samples to respect a memory budget; sample chunks are
merged with a running log-sum-exp. Also here: the memory rule and the input checks
shared with `vi_lab.evaluation.ais`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vi_lab.chunking import bytes_per_pair, map_points
from vi_lab.inference import gaussian
from vi_lab.inference.objectives import Decoder, log_joint


def check_inputs(
    decoder: Decoder, x: Tensor, loc: Tensor, log_scale: Tensor, memory_budget_mb: float
) -> None:
    """Raise ValueError unless x is (B, P), loc and log_scale are (B, D) and the budget is positive."""
    if x.dim() != 2:
        raise ValueError(f"x must have shape (B, P), got {tuple(x.shape)}")
    if loc.dim() != 2 or loc.shape[0] != x.shape[0]:
        raise ValueError(f"loc must have shape (B, D) with B = {x.shape[0]}, got {tuple(loc.shape)}")
    if log_scale.shape != loc.shape:
        raise ValueError(
            f"log_scale must have the shape {tuple(loc.shape)} of loc, got {tuple(log_scale.shape)}"
        )
    latent_dim = getattr(decoder, "latent_dim", loc.shape[1])
    if loc.shape[1] != latent_dim:
        raise ValueError(f"loc has latent size {loc.shape[1]} but decoder.latent_dim is {latent_dim}")
    if not memory_budget_mb > 0:
        raise ValueError(f"memory_budget_mb must be positive, got {memory_budget_mb}")


@torch.no_grad()
def iwae_log_marginal(
    decoder: Decoder,
    x: Tensor,
    loc: Tensor,
    log_scale: Tensor,
    num_samples: int = 5000,
    memory_budget_mb: float = 512.0,
) -> Tensor:
    """Per-point importance-weighted estimate of log p(x) with proposal q, shape (B,).

    A chunk of k samples x b points costs k * b * `bytes_per_pair` bytes; chunks take all
    points and as many samples as fit, or one sample and as many points as fit. Samples are
    drawn one at a time for all points, so the answer does not depend on the chunking.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    check_inputs(decoder, x, loc, log_scale, memory_budget_mb)
    num_points = x.shape[0]
    max_pairs = max(1, int(memory_budget_mb * 2**20) // bytes_per_pair(decoder, x))
    point_chunk = min(num_points, max_pairs)
    sample_chunk = min(num_samples, max(1, max_pairs // point_chunk))

    def log_sum_weights(x: Tensor, z: Tensor, loc: Tensor, log_scale: Tensor) -> Tensor:
        z = z.transpose(0, 1)  # (k, b, D)
        return torch.logsumexp(log_joint(decoder, x, z) - gaussian.log_density(z, loc, log_scale), 0)  # (b,)

    total = torch.full((num_points,), -math.inf, dtype=x.dtype, device=x.device)  # (B,)
    for start in range(0, num_samples, sample_chunk):
        k = min(sample_chunk, num_samples - start)
        z = torch.cat([gaussian.sample(loc, log_scale, 1) for _ in range(k)]).transpose(0, 1)  # (B, k, D)
        total = torch.logaddexp(total, map_points(log_sum_weights, x, z, loc, log_scale, size=point_chunk))
    return total - math.log(num_samples)
