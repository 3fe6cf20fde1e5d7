"""The linear-Gaussian decoder (probabilistic PCA): x = W z + b + sigma * eps.

It is the lab's ground truth. With prior N(0, I) everything is closed form
(Tipping & Bishop 1999):
    p(x)      = N(x; b, W W^T + sigma^2 I)
    p(z | x)  = N(Lambda^{-1} W^T (x - b) / sigma^2, Lambda^{-1}),
                Lambda = I + W^T W / sigma^2
and the diagonal Gaussian closest to p(z | x) in KL(q || p) has the posterior mean
and variances 1 / diag(Lambda); the best full-covariance Gaussian is p(z | x) itself. For
any Gaussian q, ELBO(q) = log p(x) - KL(q || p(z|x)).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vi_lab.data.datasets import LinearGaussianTruth
from vi_lab.inference.families import Family
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

    def log_prob_bound(self, x: Tensor) -> Tensor:
        """log p(x | z) at a residual of 0, its largest value over z, (B,)."""
        return x.new_full((x.shape[0],), -self.data_dim * (0.5 * LOG_2PI + float(self.log_noise)))

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

    def best_in(self, family: Family, x: Tensor) -> Tensor:
        """The params of the family's best q for each point, argmin KL(q || p(z|x)), (B, P)."""
        return family.closest_to_gaussian(self.posterior(x)[0], self._precision())

    def exact_elbo(self, x: Tensor, family: Family, params: Tensor) -> Tensor:
        """ELBO of a Gaussian q (`family.gaussian(params)`: N(m, L L^T)) as log p(x) - KL(q || p(z|x)), (B,):
        KL = (tr(Lambda L L^T) + (m - mu)^T Lambda (m - mu) - D - log det Lambda - log det L L^T) / 2,
        in float64 (a q far out, as diverged steps leave it, must not overflow to inf * 0)."""
        loc, scale_tril = (t.double() for t in family.gaussian(params))  # (B, D), (B, D, D)
        precision = self._precision().double()
        post_loc = self.posterior(x)[0].double()
        diff = loc - post_loc  # (B, D)
        trace = ((precision @ scale_tril) * scale_tril).sum((-2, -1))
        mahalanobis = ((diff @ precision) * diff).sum(-1)
        log_det_precision = torch.linalg.slogdet(precision).logabsdet
        log_det_q = 2.0 * torch.diagonal(scale_tril, dim1=-2, dim2=-1).abs().log().sum(-1)
        kl = 0.5 * (trace + mahalanobis - self.latent_dim - log_det_precision - log_det_q)
        # an infinite scale (exp overflowed) has KL = inf; the products above give inf * 0 = NaN
        kl = torch.where(torch.isinf(scale_tril).flatten(1).any(1), torch.inf, kl)
        return self.log_marginal(x) - kl.to(x.dtype)
