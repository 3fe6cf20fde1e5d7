"""Decoders p_theta(x | z): MLP and conv networks with a Bernoulli or Gaussian likelihood.

Every decoder takes z of shape (S, B, D) (S Monte Carlo samples of B points) and
scores flattened data x of shape (B, P): `log_prob(x, z) -> (S, B)`. The Gaussian
likelihood has a diagonal scale sigma_theta(z) per pixel (Kingma & Welling 2014, Appendix C.2), floored at
`MIN_SCALE` so that constant pixels cannot drive the density to infinity. The
linear-Gaussian decoder lives in `linear_gaussian.py`; `build_decoder` picks one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vi_lab.config import Architecture, Likelihood, ModelConfig
from vi_lab.inference.gaussian import LOG_2PI
from vi_lab.models.linear_gaussian import LinearGaussianDecoder
from vi_lab.models.nets import ConvDecoderTrunk, check_image_shape, mlp

MIN_SCALE = 1e-2
_LOG_MIN_SCALE = math.log(MIN_SCALE)


class NeuralDecoder(nn.Module):
    """A network from z to likelihood parameters, and the likelihood that scores x."""

    def __init__(self, net: nn.Module, likelihood: Likelihood, latent_dim: int, data_dim: int) -> None:
        super().__init__()
        self.net = net
        self.likelihood = likelihood
        self.latent_dim = latent_dim
        self.data_dim = data_dim
        self.num_outputs = 1 if likelihood == Likelihood.bernoulli else 2

    def _params(self, z: Tensor) -> Tensor:
        """Likelihood parameters, shape (*z.shape[:-1], num_outputs, P)."""
        out = self.net(z.reshape(-1, self.latent_dim))
        return out.view(*z.shape[:-1], self.num_outputs, self.data_dim)

    def _loc_log_scale(self, params: Tensor) -> tuple[Tensor, Tensor]:
        loc, raw = params.unbind(-2)
        return loc, _LOG_MIN_SCALE + F.softplus(raw - _LOG_MIN_SCALE)

    def _neg_log_prob_pixels(self, x: Tensor, z: Tensor) -> Tensor:
        """-log p(x_j | z) for every pixel j, (S, B, P); negated by callers after any sum."""
        params = self._params(z)
        if self.likelihood == Likelihood.bernoulli:
            logits = params.squeeze(-2)  # (S, B, P)
            return F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")
        loc, log_scale = self._loc_log_scale(params)  # (S, B, P) each
        standardized = (x - loc) * torch.exp(-log_scale)
        return 0.5 * (standardized.pow(2) + LOG_2PI) + log_scale

    def log_prob_pixels(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x_j | z) for every pixel j: x (B, P), z (S, B, D) -> (S, B, P)."""
        return -self._neg_log_prob_pixels(x, z)

    def log_prob(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x | z) summed over pixels: x (B, P), z (S, B, D) -> (S, B)."""
        return -self._neg_log_prob_pixels(x, z).sum(-1)  # negate B numbers, not B x P

    def log_prob_bound(self, x: Tensor) -> Tensor:
        """An upper bound on log p(x | z) over all z, (B,): 0 for a Bernoulli likelihood of
        pixels in [0, 1] (a cross-entropy is non-negative); for the Gaussian, every pixel's
        density at most that of a residual of 0 at the smallest scale, MIN_SCALE."""
        if self.likelihood == Likelihood.bernoulli:
            return x.new_zeros(x.shape[0])
        return x.new_full((x.shape[0],), -self.data_dim * (0.5 * LOG_2PI + _LOG_MIN_SCALE))

    def mean(self, z: Tensor) -> Tensor:
        """E[x | z], shape (*z.shape[:-1], P)."""
        params = self._params(z)
        if self.likelihood == Likelihood.bernoulli:
            return torch.sigmoid(params.squeeze(-2))
        return self._loc_log_scale(params)[0]

    def sample(self, z: Tensor) -> Tensor:
        params = self._params(z)
        if self.likelihood == Likelihood.bernoulli:
            return torch.bernoulli(torch.sigmoid(params.squeeze(-2)))
        loc, log_scale = self._loc_log_scale(params)
        return loc + log_scale.exp() * torch.randn_like(loc)


def build_decoder(
    config: ModelConfig, data_dim: int, image_shape: tuple[int, ...] | None
) -> NeuralDecoder | LinearGaussianDecoder:
    if config.decoder == Architecture.linear:
        return LinearGaussianDecoder(data_dim, config.latent_dim)
    num_outputs = 1 if config.likelihood == Likelihood.bernoulli else 2
    if config.decoder == Architecture.conv:
        check_image_shape(image_shape, "model.decoder")
        net: nn.Module = ConvDecoderTrunk(config.latent_dim, config.channels, num_outputs)
    else:
        net = mlp([config.latent_dim, *config.hidden, num_outputs * data_dim])
    return NeuralDecoder(net, config.likelihood, config.latent_dim, data_dim)
