"""The curved 2-D latent model that generated `banana` data, as a decoder: the lab's
nonlinear ground truth, as the linear-Gaussian decoder is its linear one.

    p(x | z) = N(x; (z_1, z_2 + c (z_1^2 - 1)), diag sigma^2),   p(z) = N(0, I_2).

With sigma = (1, 0.1) the first coordinate says little about z_1 and the second pins
z_2 + c z_1^2, so p(z | x) lies along a parabola: far from any Gaussian (a banana; Haario,
Saksman & Tamminen 2001). Its log p(x) has no closed form; `evaluation/quadrature.py`
computes it on a grid, which this decoder allows by bounding its likelihood.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vi_lab.data.datasets import BananaTruth, banana_mean
from vi_lab.inference.gaussian import LOG_2PI


class BananaDecoder(nn.Module):
    """The fixed generating model of banana data (`Data.truth`); no trainable parameters."""

    latent_dim = 2
    data_dim = 2

    def __init__(self, truth: BananaTruth) -> None:
        super().__init__()
        self.curvature = truth.curvature
        self.register_buffer("log_noise", truth.noise_std.log())  # (2,)

    @classmethod
    def from_truth(cls, truth: BananaTruth) -> BananaDecoder:
        return cls(truth).to(truth.noise_std.device)

    def mean(self, z: Tensor) -> Tensor:
        return banana_mean(z, self.curvature)  # (..., 2)

    def log_prob_pixels(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x_j | z) per coordinate for x (B, 2) and z (S, B, 2), shape (S, B, 2)."""
        residual = (x - self.mean(z)) * torch.exp(-self.log_noise)
        return -0.5 * (residual.square() + LOG_2PI) - self.log_noise

    def log_prob(self, x: Tensor, z: Tensor) -> Tensor:
        return self.log_prob_pixels(x, z).sum(-1)  # (S, B)

    def log_prob_bound(self, x: Tensor) -> Tensor:
        """log p(x | z) at a residual of 0, its largest value over z, (B,)."""
        return x.new_full((x.shape[0],), float(-(0.5 * LOG_2PI + self.log_noise).sum()))

    def sample(self, z: Tensor) -> Tensor:
        mean = self.mean(z)
        return mean + self.log_noise.exp() * torch.randn_like(mean)
