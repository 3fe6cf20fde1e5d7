"""The tests' linear-Gaussian models (probabilistic PCA, Tipping & Bishop 1999): one module, one set
of sizes, so that every closed-form check (exact log p(x), exact posterior, best diagonal q)
runs against the same ground truth.

- `dense_decoder` / `noisy_data`: W and b drawn from a seeded generator, sigma = NOISE_STD;
  the exact posterior is far from diagonal (the `linear_model` and `linear_data` fixtures of
  conftest.py).
- `correlated_decoder` / `data`: W^T W = strength * (equicorrelation rho), for the estimators'
  tests (IWAE, AIS) that need a known, controlled gap between q* and p(z | x).
"""

from __future__ import annotations

import math

import torch

from vi_lab.inference.families import Diagonal, FullCovariance
from vi_lab.models.linear_gaussian import LinearGaussianDecoder

DATA_DIM, LATENT_DIM = 16, 4
DIAGONAL, FULL = Diagonal(LATENT_DIM), FullCovariance(LATENT_DIM)
NOISE_STD = 0.5  # sigma of `dense_decoder` and of `noisy_data`'s noise
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def dense_decoder(seed: int = 0) -> LinearGaussianDecoder:
    """W and b standard normal (from a generator seeded with `seed`), sigma = NOISE_STD."""
    generator = torch.Generator().manual_seed(seed)
    model = LinearGaussianDecoder(DATA_DIM, LATENT_DIM)
    with torch.no_grad():
        model.weight.copy_(torch.randn(DATA_DIM, LATENT_DIM, generator=generator))
        model.bias.copy_(torch.randn(DATA_DIM, generator=generator))
        model.log_noise.fill_(math.log(NOISE_STD))
    return model


def noisy_data(decoder: LinearGaussianDecoder, num_points: int = 200, seed: int = 1) -> torch.Tensor:
    """x = W z + b + NOISE_STD * eps from a generator seeded with `seed`, (num_points, P)."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(1, num_points, LATENT_DIM, generator=generator)
    with torch.no_grad():
        mean = decoder.mean(z)[0]
    return mean + NOISE_STD * torch.randn(mean.shape, generator=generator)  # (N, P)


def correlated_decoder(seed: int = 0, rho: float = 0.5, strength: float = 4.0) -> LinearGaussianDecoder:
    """Decoder with W^T W = strength * (equicorrelation rho): the posterior precision has
    correlation 0.4 between every pair of latents, so the best diagonal q has a real gap."""
    torch.manual_seed(seed)
    decoder = LinearGaussianDecoder(DATA_DIM, LATENT_DIM)
    corr = torch.full((LATENT_DIM, LATENT_DIM), rho) + (1.0 - rho) * torch.eye(LATENT_DIM)
    basis, _ = torch.linalg.qr(torch.randn(DATA_DIM, LATENT_DIM))  # (P, D), orthonormal columns
    with torch.no_grad():
        decoder.weight.copy_(basis @ torch.linalg.cholesky(strength * corr).T)
        decoder.bias.copy_(torch.randn(DATA_DIM))
    return decoder


def data(decoder: LinearGaussianDecoder, num_points: int, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    z = torch.randn(num_points, LATENT_DIM, dtype=decoder.weight.dtype, device=decoder.weight.device)
    return decoder.sample(z).detach()  # (B, P)


def best_q(decoder: LinearGaussianDecoder, x: torch.Tensor) -> torch.Tensor:
    """The diagonal family's params of the best diagonal q, (B, 2D)."""
    return decoder.best_in(DIAGONAL, x).detach()


def exact_posterior(decoder: LinearGaussianDecoder, x: torch.Tensor) -> torch.Tensor:
    """The full-covariance family's params of p(z | x) itself, (B, P)."""
    return decoder.best_in(FULL, x).detach()


def prior(x: torch.Tensor) -> torch.Tensor:
    """The diagonal family's params of the prior, (B, 2D)."""
    return DIAGONAL.prior(x.shape[0], x.device).to(x.dtype)


def error_and_standard_error(estimate: torch.Tensor, exact: torch.Tensor) -> tuple[float, float]:
    diff = estimate - exact  # (B,)
    return diff.mean().item(), diff.std().item() / math.sqrt(len(diff))
