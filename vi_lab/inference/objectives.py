"""The evidence lower bound, as pure per-example functions.

ELBO(x; q) = E_q[log p(x | z)] - KL(q || p(z)) with p(z) = N(0, I), the KL term in
closed form and the expectation a reparameterized Monte Carlo average over S samples
(the SGVB estimator with the KL in closed form: Kingma & Welling 2014, Sec. 2.3 and
Appendix B). Callers reduce; nothing here calls .item().

A decoder is any module with `log_prob(x, z) -> (S, B)` for x (B, P), z (S, B, D).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from vi_lab.chunking import map_points
from vi_lab.inference import gaussian


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
    decoder: Decoder, x: Tensor, loc: Tensor, log_scale: Tensor, num_samples: int = 1
) -> dict[str, Tensor]:
    """Per-example ELBO, reconstruction term and KL, each of shape (B,)."""
    z = gaussian.sample(loc, log_scale, num_samples)  # (S, B, D)
    recon = decoder.log_prob(x, z).mean(0)  # (B,)
    kl = gaussian.kl_to_standard_normal(loc, log_scale)  # (B,)
    return {"elbo": recon - kl, "recon": recon, "kl": kl}


def training_terms(
    decoder: Decoder, x: Tensor, loc: Tensor, log_scale: Tensor, num_samples: int = 1, beta: float = 1.0
) -> dict[str, Tensor]:
    """`elbo` plus "objective" = recon - beta * KL, the per-example bound a training step
    maximizes (beta < 1 during KL warm-up: Bowman et al. 2016), each (B,)."""
    terms = elbo(decoder, x, loc, log_scale, num_samples)
    # beta = 1 (after warm-up): the ELBO itself, without two more operations in every step
    terms["objective"] = terms["elbo"] if beta == 1 else terms["recon"] - beta * terms["kl"]
    return terms


def elbo_and_gradient(
    decoder: Decoder,
    x: Tensor,
    loc: Tensor,
    log_scale: Tensor,
    num_samples: int = 1,
    beta: float = 1.0,
    create_graph: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-example ELBO (B,) and its reparameterization gradient w.r.t. loc and log_scale,
    on `num_samples` fresh draws of eps (see `elbo_and_gradient_at`)."""
    eps = torch.randn((num_samples, *loc.shape), dtype=loc.dtype, device=loc.device)  # (S, B, D)
    return elbo_and_gradient_at(decoder, x, loc, log_scale, eps, beta, create_graph)


def elbo_and_gradient_at(
    decoder: Decoder,
    x: Tensor,
    loc: Tensor,
    log_scale: Tensor,
    eps: Tensor,
    beta: float | Tensor = 1.0,
    create_graph: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-example ELBO (B,) and its gradient w.r.t. loc and log_scale at given noise eps (S, B, D).

    With `beta` != 1 the KL term is weighted by beta (the objective of KL warm-up).

    Autograd runs through the decoder only, with z = loc + s * eps as the leaf; the
    Gaussian parts are differentiated in closed form (s = exp(log_scale)):
        d/dloc       = E[grad_z log p(x|z)]              - loc
        d/dlog_scale = E[grad_z log p(x|z) * eps] * s    - (s^2 - 1)
    where the last terms are -dKL(q || N(0, I)). Same values and gradients as autograd
    through `elbo` with the same noise, at a fraction of the graph: this is the inner
    loop's hot path. The noise comes from the caller, so that a compiled copy of this
    function (`runtime.compile`) draws no random numbers of its own and matches it.

    With `create_graph` the returned gradients are themselves differentiable functions of
    loc, log_scale and the decoder's parameters (grad_z keeps its graph, z is not cut from
    loc and log_scale): what backpropagation through refinement steps needs (Kim et al.
    2018). The estimate is returned without a graph either way.
    """
    scale = log_scale.exp()
    with torch.enable_grad():
        z = loc + scale * eps  # (S, B, D)
        if not (create_graph and z.requires_grad):
            z = z.detach().requires_grad_(True)
        recon = decoder.log_prob(x, z)  # (S, B)
        (grad_z,) = torch.autograd.grad(recon.sum(), z, create_graph=create_graph)
    kl = gaussian.kl_to_standard_normal(loc, log_scale)
    kl_loc, kl_log_scale = gaussian.kl_to_standard_normal_gradient(loc, log_scale)
    grad_loc = grad_z.mean(0) - beta * kl_loc
    grad_log_scale = (grad_z * eps).mean(0) * scale - beta * kl_log_scale
    return recon.detach().mean(0) - beta * kl.detach(), grad_loc, grad_log_scale


def chunked_elbo(
    decoder: Decoder, x: Tensor, loc: Tensor, log_scale: Tensor, batch_size: int, num_samples: int
) -> Tensor:
    """Per-point ELBO with `num_samples` Monte Carlo samples over many points, in chunks, (N,)."""
    return map_points(
        lambda x, loc, log_scale: elbo(decoder, x, loc, log_scale, num_samples)["elbo"],
        x,
        loc,
        log_scale,
        size=batch_size,
    )
