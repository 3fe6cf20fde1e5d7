"""The variational families against closed forms: their densities, KL terms and gradients; the
nesting of the diagonal Gaussian in the others; and refinement in each family on the
linear-Gaussian model, whose posterior is a full-covariance Gaussian."""

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
    error_and_standard_error,
    noisy_data,
    prior,
)
from vi_lab.config import ConfigError, EvalConfig, FlowConfig, InferenceConfig, Likelihood, load_config
from vi_lab.data.datasets import load_data
from vi_lab.inference.families import (
    FAMILIES,
    LAYER_STEP_SCALE,
    Diagonal,
    FullCovariance,
    PlanarFlow,
    build_family,
)
from vi_lab.inference.local_fit import ascent_step
from vi_lab.inference.objectives import chunked_elbo
from vi_lab.inference.refine import refine
from vi_lab.models import model as model_module
from vi_lab.models.decoders import NeuralDecoder
from vi_lab.models.model import build_model, check_table_fits, table_bytes
from vi_lab.models.nets import mlp
from vi_lab.train import train_step

D = 3
FAMILIES_UNDER_TEST = [Diagonal(D), FullCovariance(D), PlanarFlow(D, 3)]
IDS = ["diagonal", "full", "flow"]


def _decoder(dtype: torch.dtype = torch.float32) -> NeuralDecoder:
    torch.manual_seed(0)
    net = mlp([D, 16, 2 * 5]).to(dtype)
    return NeuralDecoder(net, Likelihood.gaussian, latent_dim=D, data_dim=5).requires_grad_(False)


def _random_params(family, num_points: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    noise = 0.4 * torch.randn(num_points, family.num_params, generator=generator, dtype=dtype)
    return family.prior(num_points).to(dtype) + noise


@pytest.mark.parametrize("family", FAMILIES_UNDER_TEST, ids=IDS)
def test_the_prior_params_give_the_prior(family) -> None:
    eps = torch.randn(7, 4, D)
    drawn = family.draw(family.prior(4), eps)
    assert torch.equal(drawn.z, eps)
    assert torch.allclose(drawn.log_q, -0.5 * (eps.square() + math.log(2 * math.pi)).sum(-1))
    assert drawn.kl.abs().max() == 0.0
    assert family.prior(4).shape == (4, family.num_params)


def test_zero_off_diagonals_and_zero_layers_reproduce_the_diagonal_family() -> None:
    """The same noise: the same z, log q(z) and KL, the same ELBO estimate and the same
    gradient on the (loc, log_scale) block; the extra blocks get gradients of their own."""
    decoder, diagonal = _decoder(), Diagonal(D)
    base = _random_params(diagonal, 6)
    x = torch.randn(6, 5)
    eps = torch.randn(4, 6, D)
    full = FullCovariance(D)
    full_params = torch.cat([base, torch.zeros(6, full.num_off_diagonal)], 1)
    flat = PlanarFlow(D, 0)
    reference = diagonal.draw(base, eps)
    for family, params in ((full, full_params), (flat, base)):
        drawn = family.draw(params, eps)
        assert torch.equal(drawn.z, reference.z) and torch.equal(drawn.log_q, reference.log_q)
        torch.testing.assert_close(drawn.kl, reference.kl, rtol=0, atol=1e-6)
        ours = family.elbo_and_gradient(decoder, x, params, eps, beta=0.7)
        theirs = diagonal.elbo_and_gradient(decoder, x, base, eps, beta=0.7)
        torch.testing.assert_close(ours.recon, theirs.recon)
        torch.testing.assert_close(ours.kl, theirs.kl)
        torch.testing.assert_close(ours.grad[:, : 2 * D], theirs.grad, rtol=1e-5, atol=1e-5)
    assert FullCovariance(D).elbo_and_gradient(decoder, x, full_params, eps).grad[:, 2 * D :].abs().max() > 0


@pytest.mark.parametrize("family", FAMILIES_UNDER_TEST, ids=IDS)
def test_the_gradient_is_autograd_through_the_elbo_and_finite_differences(family) -> None:
    """The family's gradient (the diagonal family's closed-form fast path, the others' autograd)
    equals autograd through `objectives.elbo` on the same noise, and central finite differences
    of that fixed-noise ELBO along random directions (float64, relative error < 1e-6)."""
    decoder = _decoder(torch.float64)
    x = torch.randn(6, 5, dtype=torch.float64)
    params = _random_params(family, 6, torch.float64)
    torch.manual_seed(3)
    eps = torch.randn(5, 6, D, dtype=torch.float64)

    def fixed_noise_elbo(p: torch.Tensor) -> torch.Tensor:
        drawn = family.draw(p, eps)
        kl = drawn.kl if drawn.kl.dim() == 1 else drawn.kl.mean(0)
        return (decoder.log_prob(x, drawn.z).mean(0) - 0.6 * kl).sum()

    grad = family.elbo_and_gradient(decoder, x, params, eps, beta=0.6).grad
    leaf = params.clone().requires_grad_(True)
    (reference,) = torch.autograd.grad(fixed_noise_elbo(leaf), leaf)
    torch.testing.assert_close(grad, reference, rtol=1e-9, atol=1e-9)
    generator = torch.Generator().manual_seed(4)
    for _ in range(3):
        direction = torch.randn(params.shape, generator=generator, dtype=torch.float64)
        h = 1e-5
        finite = (fixed_noise_elbo(params + h * direction) - fixed_noise_elbo(params - h * direction)) / (
            2 * h
        )
        assert (grad * direction).sum().item() == pytest.approx(finite.item(), rel=1e-6)
    assert all(p.grad is None for p in decoder.parameters())


def test_full_covariance_density_and_kl_are_those_of_torch_distributions() -> None:
    family = FullCovariance(D)
    params = _random_params(family, 5)
    loc, scale_tril = family.gaussian(params)
    q = torch.distributions.MultivariateNormal(loc, scale_tril=scale_tril)
    drawn = family.draw(params, torch.randn(8, 5, D))
    torch.testing.assert_close(drawn.log_q, q.log_prob(drawn.z), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(family.log_prob(params, drawn.z), drawn.log_q, rtol=1e-5, atol=1e-5)
    p = torch.distributions.MultivariateNormal(torch.zeros(D), torch.eye(D))
    torch.testing.assert_close(drawn.kl, torch.distributions.kl_divergence(q, p), rtol=1e-5, atol=1e-5)


def test_a_planar_flow_density_is_its_jacobian_and_its_kl_estimate_is_unbiased() -> None:
    """log q(z) = log N(eps) - log |det dz/deps| with the Jacobian from autograd; the per-sample
    KL terms (the base's KL in closed form plus a Monte Carlo correction) average to
    E_q[log q(z) - log p(z)] within 3 standard errors; no closed-form log q at a given z."""
    family = PlanarFlow(2, 4)
    params = family.prior(1) + 0.8 * torch.randn(
        1, family.num_params, generator=torch.Generator().manual_seed(5)
    )
    for seed in range(5):
        eps = torch.randn(1, 1, 2, generator=torch.Generator().manual_seed(seed))
        jacobian = torch.autograd.functional.jacobian(
            lambda e: family.draw(params, e.view(1, 1, 2)).z.view(2), eps.view(2)
        )
        expected = -0.5 * eps.square().sum() - math.log(2 * math.pi) - torch.det(jacobian).abs().log()
        assert family.draw(params, eps).log_q.item() == pytest.approx(expected.item(), abs=1e-4)
    drawn = family.draw(params, torch.randn(200_000, 1, 2, generator=torch.Generator().manual_seed(6)))
    log_p = -0.5 * drawn.z.square().sum(-1) - math.log(2 * math.pi)
    direct = (drawn.log_q - log_p)[:, 0]
    # paired on the same samples: they differ by KL(q_0 || p) - (log q_0(z_0) - log p(z_0)), of mean 0
    error, standard_error = error_and_standard_error(drawn.kl[:, 0], direct)
    assert abs(error) < 3 * standard_error, (error, standard_error)
    assert drawn.kl.std() < direct.std()  # the closed-form base part removes some of the noise
    with pytest.raises(NotImplementedError, match="log q"):
        family.log_prob(params, drawn.z[:2])


def test_refinement_in_each_family_reaches_its_closed_form_optimum(linear_model, linear_data) -> None:
    """The linear-Gaussian posterior is a full-covariance Gaussian. From the prior, with the
    refinement defaults: L[q*_full] equals the exact log p(x) within 0.01 nats per point (the
    mean; no point is 0.05 off), L[q*_diagonal] the closed-form best diagonal q*, and a planar
    flow on a diagonal base is at least as good as the diagonal and no better than log p(x)
    (paired over the points, within 3 standard errors of a 2000-sample ELBO)."""
    x = linear_data[:100]
    config = EvalConfig().refine
    torch.manual_seed(8)
    with torch.no_grad():
        exact = linear_model.log_marginal(x)
        best_diagonal = linear_model.exact_elbo(x, DIAGONAL, best_q(linear_model, x))
    full = refine(linear_model, FULL, x, FULL.prior(100), config)
    with torch.no_grad():
        full_gap = exact - linear_model.exact_elbo(x, FULL, full.params)
    assert full_gap.mean() < 0.01 and full_gap.max() < 0.05 and full_gap.min() > -1e-4, full_gap
    diagonal = refine(linear_model, DIAGONAL, x, prior(x), config)
    with torch.no_grad():
        diagonal_gap = best_diagonal - linear_model.exact_elbo(x, DIAGONAL, diagonal.params)
    assert diagonal_gap.mean() < 0.01 and diagonal_gap.min() > -1e-4
    assert (exact - best_diagonal).mean() > 0.2  # the diagonal really is short of the posterior (0.28)
    flow = PlanarFlow(LATENT_DIM, 4)
    fitted = refine(linear_model, flow, x, flow.prior(100), config)
    with torch.no_grad():
        flow_elbo = chunked_elbo(linear_model, flow, x, fitted.params, 100, 2000)
    difference, standard_error = error_and_standard_error(flow_elbo, best_diagonal)
    assert difference > -3 * standard_error, (difference, standard_error)
    above, standard_error = error_and_standard_error(flow_elbo, exact)  # never above log p(x)
    assert above < 3 * standard_error, (above, standard_error)


def test_build_family_reads_the_config() -> None:
    assert build_family("flow", 5, InferenceConfig(flow=FlowConfig(num_layers=2))) == PlanarFlow(5, 2)
    assert build_family("full", 5).num_params == 10 + 10
    assert set(FAMILIES) == {"diagonal", "full", "flow"}
    with pytest.raises(ConfigError, match="num_layers"):
        load_config(None, ["inference.flow.num_layers=-1"])


@pytest.mark.parametrize("kind", ["local", "amortized", "semi_amortized"])
@pytest.mark.parametrize("name", IDS)
def test_every_mode_trains_with_every_family(kind: str, name: str) -> None:
    """The table holds (N, P) rows and the encoder emits P numbers of the run's family; one
    training step moves the decoder and gives a finite objective."""
    config = load_config(
        "configs/linear_gaussian.yaml",
        [
            f"inference.kind={kind}",
            f"inference.family={name}",
            "inference.flow.num_layers=2",
            "data.synthetic.num_points=140",
        ],
    )
    data = load_data(config.data, torch.device("cpu"))
    model = build_model(config, data)
    family = model.family
    assert family.name == name
    x, idx = data.x["train"][:20], torch.arange(20)
    assert model.posterior(x, idx).shape == (20, family.num_params)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in model.decoder.parameters()]
    terms = train_step(model, optimizer, x, idx, beta=1.0, num_samples=1)
    assert torch.isfinite(terms["elbo"]).all()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.decoder.parameters(), strict=True))


def test_a_table_that_does_not_fit_is_one_line_with_its_size(monkeypatch, capsys) -> None:
    family = FullCovariance(50)
    assert table_bytes(55_000, family) == 55_000 * (3 * 1325 + 1) * 4  # about 0.8 GiB
    monkeypatch.setattr(model_module, "available_bytes", lambda where: 2**29)  # 0.5 GiB free
    with pytest.raises(ConfigError, match=r"needs 0\.81 GiB.*inference\.family=diagonal"):
        check_table_fits(55_000, family, "cpu")
    check_table_fits(55_000, Diagonal(50), "cpu")  # 0.06 GiB: fits

    from vi_lab.cli import main

    code = main(
        [
            "train",
            "configs/smoke.yaml",
            "inference.kind=local",
            "inference.family=full",
            "model.latent_dim=500",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("vi-lab train: error: inference.family:") and "\n" not in err


def test_a_planar_flow_steps_its_layers_at_a_tenth_of_the_base_step_size() -> None:
    """Adam's first step moves every parameter by its step size (m / sqrt(v) = sign of the
    gradient): lr for the base's loc and log-scale, LAYER_STEP_SCALE * lr for the layers' u, w, b,
    whose product makes a base-sized step move a layer far; the Gaussian families take lr everywhere."""
    decoder = dense_decoder()
    x = noisy_data(decoder, 20)
    for family, layer_scale in ((PlanarFlow(LATENT_DIM, 3), LAYER_STEP_SCALE), (DIAGONAL, 1.0)):
        params = family.prior(20) + 0.3 * torch.randn(20, family.num_params)
        zeros, ones = torch.zeros_like(params), torch.ones(20)
        eps = torch.randn(1, 20, LATENT_DIM)
        state = (zeros, zeros, zeros[:, 0], ones)  # fresh moments, step 0, every row active
        _, moved, *_ = ascent_step(decoder, family, x, params, *state, 0.05 * ones, eps, torch.tensor(1.0))
        step = (moved - params).abs()
        base = step[:, : 2 * LATENT_DIM]
        assert torch.allclose(base[base > 1e-6], torch.tensor(0.05), rtol=1e-3)
        layers = step[:, 2 * LATENT_DIM :]
        assert torch.allclose(layers[layers > 1e-6], torch.tensor(0.05 * layer_scale), rtol=1e-3)
