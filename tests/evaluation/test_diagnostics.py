"""Posterior diagnostics against the linear-Gaussian closed forms (probabilistic PCA,
x = W z + b + sigma eps, z ~ N(0, I); Tipping & Bishop 1999).

With Lambda = I + W^T W / sigma^2, the posterior is p(z | x) = N(mu(x), Sigma), Sigma = Lambda^-1,
and over x ~ p(x) the posterior means have Cov_x(mu) = I - Sigma (the law of total variance:
Cov(z) = I = E Cov(z | x) + Cov E(z | x)). Hence, for a Gaussian q(z | x) = N(c mu(x), C):
- the aggregate posterior is q(z) = N(0, A), A = c^2 (I - Sigma) + C;
- I_q(x; z) = H(q(z)) - E_x H(q(z | x)) = (log det A - log det C) / 2, which for the exact
  posterior (c = 1, C = Sigma, A = I) is the model's I(x; z) = log det Lambda / 2;
- KL(q(z) || p(z)) = (tr A - D - log det A) / 2, zero for the exact posterior.
A latent dimension whose column of W is zero has Sigma_dd = 1 and mu_d(x) = 0 for every x: its
posterior is the prior, and it is not an active unit.
"""

from __future__ import annotations

import math

import pytest
import torch

from tests.linear_gaussian import (
    DIAGONAL,
    FULL,
    LATENT_DIM,
    best_q,
    dense_decoder,
    exact_posterior,
    noisy_data,
)
from vi_lab.evaluation.diagnostics import (
    ACTIVE_THRESHOLD,
    diagnose,
    marginal_moments,
    mean_variance,
    mutual_information_terms,
)
from vi_lab.inference.families import PlanarFlow
from vi_lab.models.linear_gaussian import LinearGaussianDecoder

DEAD = [1, 3]  # latent dimensions switched off in W


def switched_off(weight_scale: float = 1.0) -> LinearGaussianDecoder:
    """`dense_decoder` with W scaled and the columns DEAD set to zero."""
    decoder = dense_decoder()
    with torch.no_grad():
        decoder.weight.mul_(weight_scale)
        decoder.weight[:, DEAD] = 0.0
    return decoder


def flow_on_live_dimensions(base: torch.Tensor) -> tuple[PlanarFlow, torch.Tensor]:
    """A 2-layer planar flow on the diagonal q's `base` params whose layers move only the live
    dimensions (u and w zero in DEAD): a non-Gaussian q whose dead marginals stay N(0, 1)."""
    flow = PlanarFlow(LATENT_DIM, num_layers=2)
    params = flow.prior(base.shape[0]).clone()
    params[:, : 2 * LATENT_DIM] = base
    live = torch.ones(LATENT_DIM)
    live[DEAD] = 0.0
    for k, (u, b) in enumerate(((1.5, 0.3), (-0.8, -0.5))):
        start = 2 * LATENT_DIM + k * flow.layer_size
        w = live * torch.tensor([1.0, 0.3, -0.7, 0.2])
        params[:, start : start + LATENT_DIM] = u * live
        params[:, start + LATENT_DIM : start + 2 * LATENT_DIM] = w
        params[:, start + 2 * LATENT_DIM] = b
    return flow, params


def qs_of_every_family(decoder: LinearGaussianDecoder, x: torch.Tensor) -> dict[str, tuple]:
    """The best diagonal q, the exact posterior (full covariance) and a flow, each on x."""
    return {
        "diagonal": (DIAGONAL, best_q(decoder, x)),
        "full": (FULL, exact_posterior(decoder, x)),
        "flow": flow_on_live_dimensions(best_q(decoder, x)),
    }


@pytest.mark.parametrize("family", ["diagonal", "full", "flow"])
def test_active_units_are_the_live_dimensions(family):
    """2 of 4 columns of W are zero: 2 active units in every family. The flow's E_q[z] is a
    Monte Carlo mean of only 16 draws, whose noise (Var_q / 16 = 0.06 in a dead dimension, above
    the threshold) the estimate subtracts; uncorrected, every dimension would count (negative
    control)."""
    torch.manual_seed(0)
    decoder = switched_off()
    x = noisy_data(decoder, num_points=500)
    q_family, params = qs_of_every_family(decoder, x)[family]
    diagnostics = diagnose(q_family, params, num_samples=16)
    assert diagnostics.active_units == LATENT_DIM - len(DEAD)
    assert (diagnostics.mean_variance[DEAD].abs() < ACTIVE_THRESHOLD).all()
    if family == "flow":
        means, _, noise = marginal_moments(q_family, params, num_samples=16)
        assert (noise > 0).all()
        assert (mean_variance(means, torch.zeros_like(noise)) > ACTIVE_THRESHOLD).all()
    # the prior everywhere: no active unit
    assert diagnose(q_family, q_family.prior(x.shape[0]), num_samples=16).active_units == 0


def test_kl_per_dimension_sums_to_the_kl():
    """Diagonal q: the D marginal KLs sum to KL(q || p) exactly. Full covariance: to KL(q || p)
    less q's total correlation, -log det corr(Sigma) / 2 (closed form, > 0 here). A flow with
    identity layers is the diagonal q, and its Monte Carlo moment estimate agrees with it."""
    decoder = dense_decoder()
    x = noisy_data(decoder, num_points=200)
    torch.manual_seed(0)
    diagonal = best_q(decoder, x)
    eps = torch.randn(1, x.shape[0], LATENT_DIM)
    per_dim = diagnose(DIAGONAL, diagonal).kl_per_dimension  # (N, D)
    torch.testing.assert_close(per_dim.sum(1), DIAGONAL.draw(diagonal, eps).kl, rtol=1e-5, atol=1e-5)

    exact = exact_posterior(decoder, x)
    _, scale_tril = FULL.gaussian(exact)
    covariance = scale_tril @ scale_tril.mT
    std = covariance.diagonal(dim1=-2, dim2=-1).sqrt()
    total_correlation = -0.5 * torch.logdet(covariance / (std[:, :, None] * std[:, None, :]))
    assert (total_correlation > 0.1).all()  # the dense W correlates the posterior
    total = FULL.draw(exact, eps).kl
    torch.testing.assert_close(
        diagnose(FULL, exact).kl_per_dimension.sum(1), total - total_correlation, rtol=1e-4, atol=1e-4
    )

    flow = PlanarFlow(LATENT_DIM, num_layers=2)
    identity = flow.prior(x.shape[0]).clone()
    identity[:, : 2 * LATENT_DIM] = diagonal
    torch.testing.assert_close(
        diagnose(flow, identity).kl_per_dimension.mean(0), per_dim.mean(0), rtol=0.0, atol=0.03
    )


def gaussian_truth(
    decoder: LinearGaussianDecoder, shrink: float, covariance: torch.Tensor
) -> tuple[float, float]:
    """(I_q(x; z), KL(q(z) || p(z))) of q(z | x) = N(shrink * mu(x), covariance) over x ~ p(x)."""
    sigma = torch.linalg.inv(decoder._precision()).double()
    covariance = covariance.double()
    aggregate = shrink**2 * (torch.eye(LATENT_DIM, dtype=torch.float64) - sigma) + covariance
    mutual_information = 0.5 * (torch.logdet(aggregate) - torch.logdet(covariance))
    marginal_kl = 0.5 * (aggregate.trace() - LATENT_DIM - torch.logdet(aggregate))
    return mutual_information.item(), marginal_kl.item()


def test_mutual_information_against_the_closed_form():
    """On 2,000 points of a model with I(x; z) = 0.71 nats, He et al.'s estimate for the exact
    posterior agrees with log det Lambda / 2 within 3 standard errors, and the marginal KL with 0;
    for the best diagonal q, each agrees with that q's own closed form. Negative control: q with
    its means halved (a wrong posterior) has its own MI, which the estimate finds, and which the
    check against the model's I(x; z) rejects."""
    decoder = switched_off(weight_scale=0.15)
    x = noisy_data(decoder, num_points=2000, seed=3)
    exact_mi = 0.5 * torch.logdet(decoder._precision().double()).item()
    assert 0.5 < exact_mi < 2.0
    sigma = torch.linalg.inv(decoder._precision()).detach()

    def estimate(family, params) -> tuple[float, float, float, float]:
        torch.manual_seed(1)  # not the data's seed: q's noise would be the z that drew x
        d = diagnose(family, params)
        se = [t.std().item() / math.sqrt(t.shape[0]) for t in (d.mutual_information, d.marginal_kl)]
        return d.mutual_information.mean().item(), se[0], d.marginal_kl.mean().item(), se[1]

    mi, mi_se, marginal, marginal_se = estimate(FULL, exact_posterior(decoder, x))
    assert abs(mi - exact_mi) < 3 * mi_se and mi_se < 0.05
    assert abs(marginal) < 3 * marginal_se

    diagonal = best_q(decoder, x)
    truth_mi, truth_marginal = gaussian_truth(
        decoder, 1.0, torch.diag_embed(DIAGONAL.unpack(diagonal)[1][0].exp() ** 2)
    )
    mi, mi_se, marginal, marginal_se = estimate(DIAGONAL, diagonal)
    assert abs(mi - truth_mi) < 3 * mi_se
    assert abs(marginal - truth_marginal) < 3 * marginal_se

    shrunk = exact_posterior(decoder, x).clone()
    shrunk[:, :LATENT_DIM] *= 0.5
    truth_mi, truth_marginal = gaussian_truth(decoder, 0.5, sigma)
    mi, mi_se, marginal, marginal_se = estimate(FULL, shrunk)
    assert abs(mi - truth_mi) < 3 * mi_se
    assert abs(marginal - truth_marginal) < 3 * marginal_se
    assert abs(mi - exact_mi) > 3 * mi_se  # the negative control fails the check


def test_a_family_without_log_prob_has_no_mutual_information():
    """A planar flow has no density at an arbitrary z: no MI, no marginal KL, but the rest."""
    decoder = switched_off()
    x = noisy_data(decoder, num_points=50)
    flow, params = flow_on_live_dimensions(best_q(decoder, x))
    assert mutual_information_terms(flow, params) is None
    diagnostics = diagnose(flow, params)
    assert diagnostics.mutual_information is None and diagnostics.marginal_kl is None
    assert diagnostics.summary()["mutual_information"] is None
    assert diagnostics.kl_per_dimension.shape == (50, LATENT_DIM)
