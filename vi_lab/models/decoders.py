"""Decoders p_theta(x | z): MLP and conv networks; Bernoulli, Gaussian or discretized logistic likelihoods.

Every decoder takes z of shape (S, B, D) (S Monte Carlo samples of B points) and
scores flattened data x of shape (B, P): `log_prob(x, z) -> (S, B)`. The Gaussian
likelihood has a diagonal scale sigma_theta(z) per pixel (Kingma & Welling 2014, Appendix C.2), floored at
`MIN_SCALE` so that constant pixels cannot drive the density to infinity. The discretized
logistic (Salimans et al. 2017, PixelCNN++, one component) gives each of the 256 intensity
levels of a pixel in [0, 1] the logistic mass of its bin, the end bins the tails: log p(x | z)
is then a log-probability of the 8-bit image (bits per dimension: -log p / (P log 2)). The
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
# floor of log sigma per likelihood: the discretized logistic's bins are 1/255 wide, so its scale
# may go far below the Gaussian's floor (PixelCNN++ clamps log s at -7)
LOG_MIN_SCALE = {Likelihood.gaussian: math.log(MIN_SCALE), Likelihood.discretized_logistic: -7.0}
NUM_LEVELS = 256  # 8-bit intensities, scaled to [0, 1] by the data package
HALF_BIN = 0.5 / (NUM_LEVELS - 1)


def num_params(likelihood: Likelihood) -> int:
    """Likelihood parameters per pixel: logits, or (loc, raw scale)."""
    return 1 if likelihood == Likelihood.bernoulli else 2


def _discretized_logistic_log_prob(x: Tensor, loc: Tensor, log_scale: Tensor) -> Tensor:
    """log P(x) of a logistic binned to NUM_LEVELS levels on [0, 1], elementwise (Salimans et al. 2017)."""
    inv_scale = torch.exp(-log_scale)
    centered = x - loc
    upper = inv_scale * (centered + HALF_BIN)
    lower = inv_scale * (centered - HALF_BIN)
    log_cdf_upper = upper - F.softplus(upper)  # log sigmoid(upper): the mass of the first bin
    log_survival_lower = -F.softplus(lower)  # log(1 - sigmoid(lower)): the mass of the last bin
    mass = torch.sigmoid(upper) - torch.sigmoid(lower)
    middle = inv_scale * centered  # where the bin's mass underflows, density at its centre times its width
    log_density = middle - log_scale - 2.0 * F.softplus(middle) + math.log(2 * HALF_BIN)
    log_mass = torch.where(mass > 1e-5, torch.log(mass.clamp_min(1e-12)), log_density)
    return torch.where(
        x < HALF_BIN, log_cdf_upper, torch.where(x > 1.0 - HALF_BIN, log_survival_lower, log_mass)
    )


class NeuralDecoder(nn.Module):
    """A network from z to likelihood parameters, and the likelihood that scores x."""

    def __init__(self, net: nn.Module, likelihood: Likelihood, latent_dim: int, data_dim: int) -> None:
        super().__init__()
        self.net = net
        self.likelihood = likelihood
        self.latent_dim = latent_dim
        self.data_dim = data_dim
        self.num_outputs = num_params(likelihood)

    def _params(self, z: Tensor) -> Tensor:
        """Likelihood parameters, shape (*z.shape[:-1], num_outputs, P)."""
        out = self.net(z.reshape(-1, self.latent_dim))
        return out.view(*z.shape[:-1], self.num_outputs, self.data_dim)

    def _loc_log_scale(self, params: Tensor) -> tuple[Tensor, Tensor]:
        loc, raw = params.unbind(-2)
        floor = LOG_MIN_SCALE[self.likelihood]
        return loc, floor + F.softplus(raw - floor)

    def _neg_log_prob_pixels(self, x: Tensor, z: Tensor) -> Tensor:
        """-log p(x_j | z) for every pixel j, (S, B, P); negated by callers after any sum."""
        params = self._params(z)
        if self.likelihood == Likelihood.bernoulli:
            logits = params.squeeze(-2)  # (S, B, P)
            return F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")
        loc, log_scale = self._loc_log_scale(params)  # (S, B, P) each
        if self.likelihood == Likelihood.discretized_logistic:
            return -_discretized_logistic_log_prob(x, loc, log_scale)
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
        pixels in [0, 1] (a cross-entropy is non-negative) and for the discretized logistic (a
        probability); for the Gaussian, every pixel's density at most that of a residual of 0 at
        the smallest scale, MIN_SCALE."""
        if self.likelihood != Likelihood.gaussian:
            return x.new_zeros(x.shape[0])
        return x.new_full((x.shape[0],), -self.data_dim * (0.5 * LOG_2PI + LOG_MIN_SCALE[self.likelihood]))

    def mean(self, z: Tensor) -> Tensor:
        """E[x | z], shape (*z.shape[:-1], P) (the discretized logistic: its location, clamped to [0, 1])."""
        params = self._params(z)
        if self.likelihood == Likelihood.bernoulli:
            return torch.sigmoid(params.squeeze(-2))
        loc = self._loc_log_scale(params)[0]
        return loc.clamp(0.0, 1.0) if self.likelihood == Likelihood.discretized_logistic else loc

    def sample(self, z: Tensor) -> Tensor:
        params = self._params(z)
        if self.likelihood == Likelihood.bernoulli:
            return torch.bernoulli(torch.sigmoid(params.squeeze(-2)))
        loc, log_scale = self._loc_log_scale(params)
        if self.likelihood == Likelihood.discretized_logistic:
            u = torch.rand_like(loc).clamp(1e-5, 1.0 - 1e-5)
            x = loc + log_scale.exp() * (torch.log(u) - torch.log1p(-u))  # a logistic draw
            return (x.clamp(0.0, 1.0) * (NUM_LEVELS - 1)).round() / (NUM_LEVELS - 1)  # its bin
        return loc + log_scale.exp() * torch.randn_like(loc)


def build_decoder(
    config: ModelConfig, data_dim: int, image_shape: tuple[int, ...] | None
) -> NeuralDecoder | LinearGaussianDecoder:
    if config.decoder == Architecture.linear:
        return LinearGaussianDecoder(data_dim, config.latent_dim)
    num_outputs = num_params(config.likelihood)
    if config.decoder == Architecture.conv:
        check_image_shape(image_shape, "model.decoder")
        net: nn.Module = ConvDecoderTrunk(config.latent_dim, config.channels, num_outputs, image_shape)
    else:
        net = mlp([config.latent_dim, *config.hidden, num_outputs * data_dim])
    return NeuralDecoder(net, config.likelihood, config.latent_dim, data_dim)
