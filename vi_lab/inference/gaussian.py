"""Diagonal-Gaussian algebra shared by every estimator in the lab.

The variational family is q(z) = N(loc, diag(exp(log_scale)^2)) and the prior is
N(0, I). Sampling uses the reparameterization z = loc + scale * eps (Kingma & Welling
2014, Sec. 2.4).
Every density sums over the last (latent) dimension and keeps the leading ones.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)


def sample(loc: Tensor, log_scale: Tensor, num_samples: int) -> Tensor:
    """Reparameterized samples z = loc + exp(log_scale) * eps, shape (S, B, D)."""
    eps = torch.randn((num_samples, *loc.shape), dtype=loc.dtype, device=loc.device)
    return loc + log_scale.exp() * eps  # (S, B, D)


def log_density(z: Tensor, loc: Tensor, log_scale: Tensor) -> Tensor:
    """log N(z; loc, diag(scale^2)) summed over the last dimension."""
    standardized = (z - loc) * torch.exp(-log_scale)
    return -0.5 * (standardized.pow(2) + LOG_2PI).sum(-1) - log_scale.sum(-1)


def log_standard_normal(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over the last dimension."""
    return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)


def kl_to_standard_normal(loc: Tensor, log_scale: Tensor) -> Tensor:
    """KL(N(loc, diag scale^2) || N(0, I)) in closed form, summed over the last dim."""
    return 0.5 * (loc.pow(2) + torch.exp(2.0 * log_scale) - 1.0 - 2.0 * log_scale).sum(-1)


def kl_to_standard_normal_gradient(loc: Tensor, log_scale: Tensor) -> tuple[Tensor, Tensor]:
    """(d/dloc, d/dlog_scale) of `kl_to_standard_normal`, each (..., D)."""
    return loc, torch.exp(2.0 * log_scale) - 1.0


def entropy(log_scale: Tensor) -> Tensor:
    """Differential entropy of a diagonal Gaussian, summed over the last dim."""
    return (log_scale + 0.5 * (1.0 + LOG_2PI)).sum(-1)


def standard_normal_params(num_points: int, latent_dim: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(loc, log_scale) of the prior N(0, I) for num_points points, each (N, D)."""
    zeros = torch.zeros(num_points, latent_dim, device=device)
    return zeros, zeros.clone()
