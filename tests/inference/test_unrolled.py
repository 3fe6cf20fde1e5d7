"""The K refinement steps of semi-amortized inference, against the linear-Gaussian closed forms:
the gradient through the steps against finite differences, and where the steps take q."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from tests.linear_gaussian import DATA_DIM, DIAGONAL, LATENT_DIM, dense_decoder, noisy_data
from vi_lab.config import EncoderGradient, RefineOptimizer, RefineStepsConfig
from vi_lab.inference.objectives import elbo_and_gradient, training_terms
from vi_lab.inference.unrolled import refine_steps
from vi_lab.models.encoders import Encoder
from vi_lab.models.nets import mlp
from vi_lab.models.posteriors import SemiAmortizedPosterior


def _semi_amortized(
    config: RefineStepsConfig,
) -> tuple[torch.nn.Module, SemiAmortizedPosterior, torch.Tensor]:
    """A float64 linear-Gaussian decoder, a small random encoder and 8 data points."""
    decoder = dense_decoder().double()
    torch.manual_seed(0)
    encoder = Encoder(mlp([DATA_DIM, 16, 2 * LATENT_DIM]), 2 * LATENT_DIM).double()
    return (
        decoder,
        SemiAmortizedPosterior(encoder, DIAGONAL, config),
        noisy_data(dense_decoder())[:8].double(),
    )


def _objective(decoder, posterior: SemiAmortizedPosterior, x: torch.Tensor, straight_through: bool = False):
    """Mean training objective on the refined q with fixed noise: a deterministic function of
    every parameter. `straight_through` (the negative control) treats the K steps as the
    identity for the gradient: the encoder's gradient is the one at lambda_K."""
    torch.manual_seed(123)
    if not straight_through:
        return posterior.training_terms(decoder, x, torch.arange(x.shape[0]), beta=0.7)["objective"].mean()
    start = posterior.encoder(x)
    steps = refine_steps(decoder, DIAGONAL, x, start, posterior.refine, beta=0.7)
    shifted = start + (steps.params - start).detach()
    return training_terms(decoder, DIAGONAL, x, shifted, beta=0.7)["objective"].mean()


@pytest.mark.parametrize("optimizer", [RefineOptimizer.sgd, RefineOptimizer.adam])
def test_gradient_through_the_steps_matches_finite_differences(optimizer):
    """SA-VAE: d/d(phi, theta) of the refined ELBO through K = 4 steps (second-order terms by
    create_graph) equals central finite differences of the same fixed-noise function, along
    random directions in encoder and decoder parameters: relative error < 1e-6 in float64
    (the differences' truncation error is ~1e-10 at h = 1e-5). Clipping is off: the clipping
    of backward vectors deliberately departs from the exact derivative."""
    config = RefineStepsConfig(
        num_steps=4,
        lr=0.01 if optimizer == RefineOptimizer.sgd else 0.05,
        optimizer=optimizer,
        num_samples=2,
        encoder_gradient=EncoderGradient.backprop,
        max_grad_norm=0.0,
    )
    decoder, posterior, x = _semi_amortized(config)
    params = [*posterior.encoder.parameters(), *decoder.parameters()]
    h = 1e-5

    def directional(straight_through: bool, direction: list[torch.Tensor]) -> tuple[float, float]:
        for p in params:
            p.grad = None
        _objective(decoder, posterior, x, straight_through).backward()
        autograd = sum((p.grad * v).sum() for p, v in zip(params, direction, strict=True)).item()
        values = []
        for sign in (1, -1):
            with torch.no_grad():
                for p, v in zip(params, direction, strict=True):
                    p.add_(sign * h * v)
            with torch.no_grad():
                values.append(_objective(decoder, posterior, x).item())
            with torch.no_grad():
                for p, v in zip(params, direction, strict=True):
                    p.sub_(sign * h * v)
        return autograd, (values[0] - values[1]) / (2 * h)

    generator = torch.Generator().manual_seed(7)
    for _ in range(3):
        direction = [torch.randn(p.shape, generator=generator, dtype=p.dtype) for p in params]
        autograd, finite = directional(False, direction)
        assert autograd == pytest.approx(finite, rel=1e-6)
        # negative control: the same check fails for a gradient that ignores the steps' Jacobian
        ignored, finite = directional(True, direction)
        assert abs(ignored - finite) > 1e-3 * abs(finite)


def _exact_gap(decoder, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """L[q*] - L[q] per point of diagonal q's in closed form, (N,)."""
    with torch.no_grad():
        best = decoder.best_in(DIAGONAL, x)
        return decoder.exact_elbo(x, DIAGONAL, best) - decoder.exact_elbo(x, DIAGONAL, params)


def _paired(diff: torch.Tensor) -> tuple[float, float]:
    return diff.mean().item(), diff.std().item() / math.sqrt(diff.numel())


@pytest.mark.parametrize(
    ("optimizer", "lr"), [(RefineOptimizer.sgd, 0.01), (RefineOptimizer.adam, 0.05)], ids=["sgd", "adam"]
)
def test_steps_move_the_guess_towards_the_closed_form_best_q(linear_model, linear_data, optimizer, lr):
    """From a guess at q* plus noise (an imperfect encoder), K noisy steps (one sample each) close
    the exact gap L[q*] - L[q]: the mean gap falls with K = 0, 2, 10, 50, each fall by more than
    3 paired standard errors over 200 points, and no K leaves the ELBO below the guess on
    average (the mean gain is above zero by 3 standard errors). Negative control: plain steps
    past the stability limit (lr > 2 / the largest curvature, about 0.02 here) end below the
    guess."""
    torch.manual_seed(3)
    best_loc, best_log_scale = DIAGONAL.unpack(linear_model.best_in(DIAGONAL, linear_data))
    loc = best_loc.detach() + torch.randn_like(best_loc)
    log_scale = best_log_scale.detach() + 0.5 * torch.randn_like(best_log_scale)
    guess = DIAGONAL.pack(loc, log_scale)
    gaps = [_exact_gap(linear_model, linear_data, guess)]
    for num_steps in (2, 10, 50):
        config = RefineStepsConfig(num_steps=num_steps, lr=lr, optimizer=optimizer)
        with torch.no_grad():
            steps = refine_steps(linear_model, DIAGONAL, linear_data, guess, config)
        gaps.append(_exact_gap(linear_model, linear_data, steps.params))
        gain, se = _paired(gaps[0] - gaps[-1])  # L[q_K] - L[q_0]
        assert gain - 3 * se > 0, (num_steps, gain, se)
    for before, after in itertools.pairwise(gaps):
        fall, se = _paired(before - after)
        assert fall - 3 * se > 0, (fall, se)
    assert gaps[-1].mean() < 0.1 * gaps[0].mean()  # most of the gap closed in 50 steps

    config = RefineStepsConfig(num_steps=3, lr=0.05, optimizer=RefineOptimizer.sgd, max_grad_norm=0.0)
    with torch.no_grad():
        steps = refine_steps(linear_model, DIAGONAL, linear_data, guess, config)
    worse, _ = _paired(_exact_gap(linear_model, linear_data, steps.params) - gaps[0])
    assert worse > 0


def test_stop_gradient_trains_the_encoder_on_its_own_elbo():
    """stop_gradient: the encoder's gradient is that of the ELBO of its own q (the first step's
    g_0, unclipped: clipping belongs to the steps), the decoder's that of the refined q; each
    checked against the same computation rebuilt from the same seed. Gradients here are far
    above the clipping norm, so a clipped g_0 would fail."""
    config = RefineStepsConfig(num_steps=3, lr=0.01, optimizer=RefineOptimizer.sgd, max_grad_norm=1.0)
    decoder, posterior, x = _semi_amortized(config)
    encoder, batch = posterior.encoder, x.shape[0]
    torch.manual_seed(5)
    posterior.training_terms(decoder, x, torch.arange(batch), beta=0.5)["objective"].mean().backward()
    got = [p.grad.clone() for p in [*encoder.parameters(), *decoder.parameters()]]

    for p in [*encoder.parameters(), *decoder.parameters()]:
        p.grad = None
    torch.manual_seed(5)
    start = encoder(x)
    grad = elbo_and_gradient(decoder, DIAGONAL, x, start.detach(), 1, 0.5).grad
    assert grad[:, :LATENT_DIM].norm(dim=1).min() > 10 * config.max_grad_norm
    torch.autograd.backward([start], [grad / batch])
    torch.manual_seed(5)
    steps = refine_steps(decoder, DIAGONAL, x, encoder(x), config, beta=0.5)
    training_terms(decoder, DIAGONAL, x, steps.params, 1, 0.5)["objective"].mean().backward()
    expected = [p.grad for p in [*encoder.parameters(), *decoder.parameters()]]
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)
