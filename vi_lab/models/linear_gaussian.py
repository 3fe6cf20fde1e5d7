"""The linear-Gaussian decoder (probabilistic PCA): x = W z + b + sigma * eps.

It is the lab's ground truth. With prior N(0, I) everything is closed form
(Tipping & Bishop 1999):
    p(x)      = N(x; b, W W^T + sigma^2 I)
    p(z | x)  = N(Lambda^{-1} W^T (x - b) / sigma^2, Lambda^{-1}),
                Lambda = I + W^T W / sigma^2
and the diagonal Gaussian closest to p(z | x) in KL(q || p) has the posterior mean
and variances 1 / diag(Lambda). For any Gaussian q, ELBO(q) = log p(x) - KL(q || p(z|x)).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vi_lab.data.datasets import LinearGaussianTruth
from vi_lab.inference.gaussian import LOG_2PI


class LinearGaussianDecoder(nn.Module):
    """p(x | z) = N(W z + b, sigma^2 I) with a learned scalar sigma."""

    def __init__(self, data_dim: int, latent_dim: int, init_scale: float = 0.1) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.data_dim = data_dim
        self.weight = nn.Parameter(init_scale * torch.randn(data_dim, latent_dim))  # (P, D)
        self.bias = nn.Parameter(torch.zeros(data_dim))  # (P,)
        self.log_noise = nn.Parameter(torch.zeros(()))

    @classmethod
    def from_truth(cls, truth: LinearGaussianTruth) -> LinearGaussianDecoder:
        """The fixed model that generated linear-Gaussian data (`Data.truth`)."""
        model = cls(*truth.weight.shape).to(truth.weight.device)
        with torch.no_grad():
            model.weight.copy_(truth.weight)
            model.bias.copy_(truth.bias)
            model.log_noise.fill_(math.log(truth.noise_std))
        return model.requires_grad_(False)

    def mean(self, z: Tensor) -> Tensor:
        return z @ self.weight.T + self.bias  # (..., P)

    def log_prob_pixels(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x_j | z) per coordinate for x (B, P) and z (S, B, D), shape (S, B, P)."""
        residual = (x - self.mean(z)) * torch.exp(-self.log_noise)  # (S, B, P)
        return -0.5 * (residual.pow(2) + LOG_2PI) - self.log_noise

    def log_prob(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x | z) for x (B, P) and z (S, B, D), shape (S, B)."""
        return self.log_prob_pixels(x, z).sum(-1)

    def sample(self, z: Tensor) -> Tensor:
        mean = self.mean(z)
        return mean + self.log_noise.exp() * torch.randn_like(mean)

    def _precision(self) -> Tensor:
        """Posterior precision Lambda = I + W^T W / sigma^2, shape (D, D)."""
        eye = torch.eye(self.latent_dim, dtype=self.weight.dtype, device=self.weight.device)
        return eye + self.weight.T @ self.weight * torch.exp(-2.0 * self.log_noise)

    def log_marginal(self, x: Tensor) -> Tensor:
        """Exact log p(x), shape (B,)."""
        eye = torch.eye(self.data_dim, dtype=x.dtype, device=x.device)
        cov = self.weight @ self.weight.T + torch.exp(2.0 * self.log_noise) * eye  # (P, P)
        dist = torch.distributions.MultivariateNormal(self.bias, covariance_matrix=cov)
        return dist.log_prob(x)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Exact posterior mean (B, D) and covariance (D, D), shared by all points."""
        cov = torch.linalg.inv(self._precision())
        projected = (x - self.bias) @ self.weight * torch.exp(-2.0 * self.log_noise)  # (B, D)
        return projected @ cov, cov

    def best_diagonal(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(loc, log_scale) of argmin_q KL(q || p(z|x)) over diagonal Gaussians q."""
        loc, _ = self.posterior(x)
        log_scale = -0.5 * torch.log(torch.diagonal(self._precision()))
        return loc, log_scale.expand_as(loc)

    def exact_elbo(self, x: Tensor, loc: Tensor, log_scale: Tensor) -> Tensor:
        """ELBO of q = N(loc, diag exp(2 log_scale)) as log p(x) - KL(q || p(z|x)), (B,)."""
        precision = self._precision()
        post_loc, _ = self.posterior(x)
        diff = loc - post_loc  # (B, D)
        variance = torch.exp(2.0 * log_scale)
        trace = (variance * torch.diagonal(precision)).sum(-1)
        mahalanobis = ((diff @ precision) * diff).sum(-1)
        log_det_precision = torch.linalg.slogdet(precision).logabsdet
        kl = 0.5 * (trace + mahalanobis - self.latent_dim - log_det_precision - 2.0 * log_scale.sum(-1))
        return self.log_marginal(x) - kl
