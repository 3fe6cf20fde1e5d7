"""The ELBO and its parts against the closed forms of the linear-Gaussian model."""

from __future__ import annotations

import math

import torch

from tests.linear_gaussian import DIAGONAL
from vi_lab.inference import gaussian
from vi_lab.inference.families import Diagonal
from vi_lab.inference.objectives import elbo, elbo_and_gradient


def _standard_error(values: torch.Tensor) -> float:
    return (values.std() / math.sqrt(values.numel())).item()


def test_elbo_never_exceeds_exact_log_marginal(linear_model, linear_data):
    torch.manual_seed(0)
    x = linear_data
    exact = linear_model.log_marginal(x)
    for _ in range(20):  # arbitrary q's, near and far
        loc = 3 * torch.randn(x.shape[0], 4)
        log_scale = torch.randn(x.shape[0], 4)
        bound = linear_model.exact_elbo(x, DIAGONAL, DIAGONAL.pack(loc, log_scale))
        assert (bound <= exact + 1e-4).all()
    # and the exact posterior's diagonal is not enough: the bound stays strictly below
    best = linear_model.best_in(DIAGONAL, x)
    assert (linear_model.exact_elbo(x, DIAGONAL, best) < exact - 1e-3).all()


def test_monte_carlo_elbo_is_unbiased_for_the_closed_form(linear_model, linear_data):
    torch.manual_seed(1)
    x = linear_data[:20]
    params = DIAGONAL.pack(torch.randn(20, 4), 0.3 * torch.randn(20, 4) - 0.5)
    with torch.no_grad():
        draws = torch.stack(
            [elbo(linear_model, DIAGONAL, x, params, 1)["elbo"] for _ in range(4000)]
        )  # (R, B)
    exact = linear_model.exact_elbo(x, DIAGONAL, params).detach()
    error = (draws.mean(0) - exact).abs()
    standard_error = draws.std(0) / math.sqrt(draws.shape[0])
    assert (error < 4 * standard_error).all()


def test_analytic_kl_matches_monte_carlo_kl():
    torch.manual_seed(2)
    loc, log_scale = torch.randn(5, 3), 0.5 * torch.randn(5, 3)
    family = Diagonal(3)
    z = family.sample(family.pack(loc, log_scale), 200_000).z  # (S, B, D)
    log_ratio = gaussian.log_density(z, loc, log_scale) - gaussian.log_standard_normal(z)  # (S, B)
    analytic = gaussian.kl_to_standard_normal(loc, log_scale)
    for b in range(5):
        assert abs(log_ratio[:, b].mean().item() - analytic[b].item()) < 4 * _standard_error(log_ratio[:, b])


def test_elbo_at_best_diagonal_equals_its_closed_form(linear_model, linear_data):
    """q* = (posterior mean, variances 1/diag Lambda).

    Its ELBO is log p(x) - (sum_i log Lambda_ii - log det Lambda) / 2.
    """
    torch.manual_seed(3)
    x = linear_data[:50]
    with torch.no_grad():
        precision = torch.eye(4) + linear_model.weight.T @ linear_model.weight / 0.25
        closed_form = linear_model.log_marginal(x) - 0.5 * (
            torch.log(torch.diagonal(precision)).sum() - torch.logdet(precision)
        )
        loc, log_scale = DIAGONAL.unpack(linear_model.best_in(DIAGONAL, x))
        best = DIAGONAL.pack(loc, log_scale)
        assert torch.allclose(linear_model.exact_elbo(x, DIAGONAL, best), closed_form, atol=1e-3)
        draws = elbo(linear_model, DIAGONAL, x, best, 20_000)["elbo"]
    assert (draws - closed_form).abs().max() < 0.05
    # the posterior mean in closed form, checked against Bayes' rule by linear algebra
    post_loc, post_cov = linear_model.posterior(x)
    assert torch.allclose(post_cov, torch.linalg.inv(precision), atol=1e-5)
    assert torch.allclose(loc, post_loc)


def test_bernoulli_decoder_log_prob_matches_torch_distribution():
    from vi_lab.config import ModelConfig
    from vi_lab.models.decoders import build_decoder

    torch.manual_seed(4)
    decoder = build_decoder(ModelConfig(latent_dim=3, hidden=[8]), 10, None)
    x, z = torch.bernoulli(torch.full((4, 10), 0.3)), torch.randn(2, 4, 3)
    logits = torch.logit(decoder.mean(z))
    reference = torch.distributions.Bernoulli(logits=logits).log_prob(x).sum(-1)
    assert torch.allclose(decoder.log_prob(x, z), reference, atol=1e-4)


def test_closed_form_gradient_equals_autograd_through_the_elbo(linear_model, linear_data):
    """Same noise (same seed): same ELBO, and the same gradient as autograd gives."""
    x = linear_data[:30]
    generator = torch.Generator().manual_seed(5)
    loc = torch.randn(30, 4, generator=generator).requires_grad_(True)
    log_scale = (0.3 * torch.randn(30, 4, generator=generator) - 1).requires_grad_(True)
    torch.manual_seed(7)
    reference = elbo(linear_model, DIAGONAL, x, DIAGONAL.pack(loc, log_scale), 3)["elbo"]
    grad_loc, grad_log_scale = torch.autograd.grad(reference.sum(), (loc, log_scale))
    torch.manual_seed(7)
    params = DIAGONAL.pack(loc, log_scale).detach()
    recon, kl, grad = elbo_and_gradient(linear_model, DIAGONAL, x, params, 3)
    assert torch.allclose(recon - kl, reference.detach(), atol=1e-4)
    assert torch.allclose(grad, torch.cat([grad_loc, grad_log_scale], 1), atol=1e-4)
    assert all(p.grad is None for p in linear_model.parameters())
