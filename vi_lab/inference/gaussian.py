"""Diagonal-Gaussian algebra: the prior N(0, I) and q = N(loc, diag(exp(log_scale)^2)),
the closed forms the variational families and the estimators share.
Every density sums over the last (latent) dimension and keeps the leading ones.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)


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
