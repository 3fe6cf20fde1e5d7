"""The importance-weighted estimate of log p(x) (Burda, Grosse & Salakhutdinov 2016, IWAE).

    log p̂(x) = logsumexp_k [log p(x, z_k) - log q(z_k)] - log K,   z_k ~ q

for a q of any family (`Family.draw` gives z_k with log q(z_k)), is a stochastic lower
bound, E[log p̂(x)] <= log p(x), that tightens as K grows. Any proposal keeps it a lower
bound; one whose tails are lighter than the posterior's leaves rare, huge weights and a bias
that K = 5000 does not remove (a curved posterior, docs/families.md). For a Gaussian q the
proposal can be the multivariate Student-t with q's location and scale (`tail_dof` degrees of
freedom), whose polynomial tails cover the posterior's (Geweke 1989, Sec. 3). The work is chunked over points
and samples to respect a memory budget; sample chunks are merged with a running
log-sum-exp. Also here: the effective sample size of the weights (Kong 1992), and the
input checks shared with `vi_lab.evaluation.ais`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vi_lab.chunking import bytes_per_pair, map_points
from vi_lab.inference.families import Family
from vi_lab.inference.objectives import Decoder, log_joint


def check_inputs(
    decoder: Decoder, family: Family, x: Tensor, params: Tensor, memory_budget_mb: float
) -> None:
    """Raise ValueError unless x is (B, P), params (B, num_params), the family's latent size the
    decoder's, and the budget positive."""
    if x.dim() != 2:
        raise ValueError(f"x must have shape (B, P), got {tuple(x.shape)}")
    family.check(params)
    if params.shape[0] != x.shape[0]:
        raise ValueError(f"params must have one row per point of x ({x.shape[0]}), got {params.shape[0]}")
    latent_dim = getattr(decoder, "latent_dim", family.latent_dim)
    if family.latent_dim != latent_dim:
        raise ValueError(
            f"the family has latent size {family.latent_dim} but decoder.latent_dim is {latent_dim}"
        )
    if not memory_budget_mb > 0:
        raise ValueError(f"memory_budget_mb must be positive, got {memory_budget_mb}")


def log_weights(decoder: Decoder, family: Family, x: Tensor, params: Tensor, eps: Tensor) -> Tensor:
    """log p(x, z_k) - log q(z_k) at z_k = T(eps_k; params) for noise eps (K, B, D), shape (K, B)."""
    drawn = family.draw(params, eps)
    return log_joint(decoder, x, drawn.z) - drawn.log_q


def student_t_log_weights(
    decoder: Decoder, family: Family, x: Tensor, params: Tensor, noise: Tensor, dof: float
) -> Tensor:
    """log p(x, z_k) - log r(z_k) for the multivariate Student-t r with `dof` degrees of freedom
    and q's location m and scale L (`family.gaussian`), shape (K, B): noise (K, B, D + 1) holds
    standard-normal eps and a chi-square(dof) draw u, z = m + L y with y = eps / sqrt(u / dof), and
    log r(z) = lgamma((dof + D) / 2) - lgamma(dof / 2) - D/2 log(dof pi) - log|det L|
    - (dof + D)/2 log(1 + |y|^2 / dof)  (Kotz & Nadarajah 2004, Eq. 1.1)."""
    loc, scale_tril = family.gaussian(params)  # (B, D), (B, D, D)
    d = family.latent_dim
    y = noise[..., :d] / (noise[..., d:] / dof).sqrt()  # (K, B, D)
    z = loc + (scale_tril @ y.unsqueeze(-1)).squeeze(-1)
    log_r = (
        math.lgamma((dof + d) / 2)
        - math.lgamma(dof / 2)
        - d / 2 * math.log(dof * math.pi)
        - scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        - (dof + d) / 2 * torch.log1p(y.square().sum(-1) / dof)
    )
    return log_joint(decoder, x, z) - log_r


def effective_sample_size(log_w: Tensor) -> Tensor:
    """(sum w)^2 / sum w^2 of log weights (K, B), per point (B,): K for equal weights, 1 at worst."""
    return torch.exp(2.0 * torch.logsumexp(log_w, 0) - torch.logsumexp(2.0 * log_w, 0))


@torch.no_grad()
def iwae_log_marginal(
    decoder: Decoder,
    family: Family,
    x: Tensor,
    params: Tensor,
    num_samples: int = 5000,
    memory_budget_mb: float = 512.0,
    tail_dof: float | None = None,
) -> Tensor:
    """Per-point importance-weighted estimate of log p(x) with proposal q, or with the Student-t
    of q's location and scale and `tail_dof` degrees of freedom (a Gaussian family), shape (B,).

    A chunk of k samples x b points costs k * b * `bytes_per_pair` bytes; chunks take all
    points and as many samples as fit, or one sample and as many points as fit. Samples are
    drawn one at a time for all points, so the answer does not depend on the chunking.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    check_inputs(decoder, family, x, params, memory_budget_mb)
    if tail_dof is not None and not (family.is_gaussian and tail_dof > 0):
        raise ValueError(
            f"a Student-t proposal needs a Gaussian family and tail_dof > 0, got {family.name} and {tail_dof}"
        )
    num_points = x.shape[0]
    max_pairs = max(1, int(memory_budget_mb * 2**20) // bytes_per_pair(decoder, x))
    point_chunk = min(num_points, max_pairs)
    sample_chunk = min(num_samples, max(1, max_pairs // point_chunk))

    def log_sum_weights(x: Tensor, noise: Tensor, params: Tensor) -> Tensor:
        noise = noise.transpose(0, 1)  # (k, b, D) or, with tail_dof, (k, b, D + 1)
        if tail_dof is None:
            return torch.logsumexp(log_weights(decoder, family, x, params, noise), 0)  # (b,)
        return torch.logsumexp(student_t_log_weights(decoder, family, x, params, noise, tail_dof), 0)

    total = torch.full((num_points,), -math.inf, dtype=x.dtype, device=x.device)  # (B,)
    for start in range(0, num_samples, sample_chunk):
        k = min(sample_chunk, num_samples - start)
        shape = (1, num_points, family.latent_dim)
        noise = torch.cat([_noise(shape, tail_dof, x) for _ in range(k)])  # (k, B, D [+ 1])
        total = torch.logaddexp(
            total, map_points(log_sum_weights, x, noise.transpose(0, 1), params, size=point_chunk)
        )
    return total - math.log(num_samples)


def _noise(shape: tuple[int, int, int], tail_dof: float | None, x: Tensor) -> Tensor:
    """One sample's noise for all points: eps (1, B, D), with a chi-square(tail_dof) draw appended
    as a last coordinate (1, B, D + 1) for a Student-t proposal."""
    eps = torch.randn(shape, dtype=x.dtype, device=x.device)
    if tail_dof is None:
        return eps
    dof = torch.tensor(float(tail_dof), dtype=x.dtype, device=x.device)
    return torch.cat([eps, torch.distributions.Chi2(dof).sample((*shape[:2], 1))], -1)
