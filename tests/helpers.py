"""A linear-Gaussian model whose exact posterior has strong correlations, for the estimators' tests."""

from __future__ import annotations

import math

import torch

from vi_lab.linear_gaussian import LinearGaussianDecoder

DATA_DIM, LATENT_DIM = 16, 4
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


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


def best_q(decoder: LinearGaussianDecoder, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    loc, log_scale = decoder.best_diagonal(x)
    return loc.detach(), log_scale.detach().contiguous()


def prior(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    zeros = torch.zeros(x.shape[0], LATENT_DIM, dtype=x.dtype, device=x.device)
    return zeros, zeros


def error_and_standard_error(estimate: torch.Tensor, exact: torch.Tensor) -> tuple[float, float]:
    diff = estimate - exact  # (B,)
    return diff.mean().item(), diff.std().item() / math.sqrt(len(diff))
