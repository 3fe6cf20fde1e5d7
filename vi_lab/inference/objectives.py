"""The evidence lower bound, as pure per-example functions of a family's params.

ELBO(x; q) = E_q[log p(x | z)] - KL(q || p(z)) with p(z) = N(0, I): the expectation a
reparameterized Monte Carlo average over S samples, the KL term in closed form where the
family has one (the SGVB estimator with the KL in closed form: Kingma & Welling 2014,
Sec. 2.3 and Appendix B), else its Monte Carlo estimate on the same samples
(`families.Draw.kl`). Callers reduce; nothing here calls .item().

A decoder is any module with `log_prob(x, z) -> (S, B)` for x (B, P), z (S, B, D); a q is
a family (`vi_lab.inference.families`) and its params (B, num_params).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from vi_lab.chunking import map_points
from vi_lab.inference import gaussian
from vi_lab.inference.families import ElboGradient, Family, sample_mean


class Decoder(Protocol):
    """What inference needs of a decoder (the networks in models/decoders.py offer more)."""

    latent_dim: int

    def log_prob(self, x: Tensor, z: Tensor) -> Tensor: ...


class LogLikelihood(NamedTuple):
    """A decoder given by its log-likelihood function alone, log_prob(x, z) -> (S, B): e.g. a
    decoder's likelihood of some pixels only, with the mask closed over."""

    latent_dim: int
    log_prob: Callable[[Tensor, Tensor], Tensor]


class GenerativeDecoder(Decoder, Protocol):
    """A decoder that also decodes and scores pixel by pixel (sampling, imputation)."""

    def log_prob_pixels(self, x: Tensor, z: Tensor) -> Tensor: ...

    def mean(self, z: Tensor) -> Tensor: ...

    def sample(self, z: Tensor) -> Tensor: ...


def log_joint(decoder: Decoder, x: Tensor, z: Tensor) -> Tensor:
    """log p(x, z) = log p(x | z) + log p(z) for z (S, B, D), shape (S, B)."""
    return decoder.log_prob(x, z) + gaussian.log_standard_normal(z)


def elbo(
    decoder: Decoder, family: Family, x: Tensor, params: Tensor, num_samples: int = 1
) -> dict[str, Tensor]:
    """Per-example ELBO, reconstruction term and KL, each of shape (B,)."""
    drawn = family.sample(params, num_samples)
    recon = decoder.log_prob(x, drawn.z).mean(0)  # (B,)
    kl = sample_mean(drawn.kl)  # (B,)
    return {"elbo": recon - kl, "recon": recon, "kl": kl}


def kl_to_prior(family: Family, params: Tensor, num_samples: int = 1) -> Tensor:
    """KL(q || p(z)) per point (B,): closed form where the family has one, else the Monte Carlo
    estimate with `num_samples` samples."""
    return sample_mean(family.sample(params, num_samples).kl)


def training_terms(
    decoder: Decoder, family: Family, x: Tensor, params: Tensor, num_samples: int = 1, beta: float = 1.0
) -> dict[str, Tensor]:
    """`elbo` plus "objective" = recon - beta * KL, the per-example bound a training step
    maximizes (beta < 1 during KL warm-up: Bowman et al. 2016), each (B,)."""
    terms = elbo(decoder, family, x, params, num_samples)
    # beta = 1 (after warm-up): the ELBO itself, without two more operations in every step
    terms["objective"] = terms["elbo"] if beta == 1 else terms["recon"] - beta * terms["kl"]
    return terms


def elbo_and_gradient(
    decoder: Decoder,
    family: Family,
    x: Tensor,
    params: Tensor,
    num_samples: int = 1,
    beta: float = 1.0,
    create_graph: bool = False,
) -> ElboGradient:
    """Per-example recon and KL estimates (B,) and the reparameterization gradient of
    recon - beta * KL with respect to the params (B, P), on `num_samples` fresh draws
    (`Family.elbo_and_gradient`, whose noise comes from the caller so that a compiled copy
    draws no random numbers of its own)."""
    eps = torch.randn(
        (num_samples, params.shape[0], family.latent_dim), dtype=params.dtype, device=params.device
    )
    return family.elbo_and_gradient(decoder, x, params, eps, beta, create_graph)


def chunked_elbo(
    decoder: Decoder, family: Family, x: Tensor, params: Tensor, batch_size: int, num_samples: int
) -> Tensor:
    """Per-point ELBO with `num_samples` Monte Carlo samples over many points, in chunks, (N,)."""
    return map_points(
        lambda x, params: elbo(decoder, family, x, params, num_samples)["elbo"], x, params, size=batch_size
    )
