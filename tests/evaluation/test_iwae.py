"""Tests of the IWAE estimate of log p(x) against the closed form of a linear-Gaussian decoder."""

from __future__ import annotations

import math

import pytest
import torch

from tests.linear_gaussian import (
    DATA_DIM,
    DEVICES,
    DIAGONAL,
    FULL,
    best_q,
    correlated_decoder,
    data,
    exact_posterior,
)
from vi_lab.chunking import bytes_per_pair
from vi_lab.evaluation.iwae import effective_sample_size, iwae_log_marginal, log_weights
from vi_lab.inference.families import Diagonal


def test_posterior_is_not_diagonal() -> None:
    decoder = correlated_decoder()
    x = data(decoder, 256)
    gap = decoder.log_marginal(x) - decoder.exact_elbo(x, DIAGONAL, best_q(decoder, x))
    assert gap.mean() > 0.3  # otherwise the IWAE tests below would be trivial


def test_large_k_matches_exact_log_marginal() -> None:
    decoder = correlated_decoder()
    x = data(decoder, 64)
    exact = decoder.log_marginal(x).detach()
    torch.manual_seed(2)
    diff = iwae_log_marginal(decoder, DIAGONAL, x, best_q(decoder, x), num_samples=5000) - exact  # (B,)
    standard_error = diff.std() / math.sqrt(len(diff))
    assert diff.mean().abs() < 0.05
    assert diff.mean() < 3 * standard_error


def test_single_sample_is_the_elbo_and_bound_grows_with_k() -> None:
    decoder = correlated_decoder()
    x = data(decoder, 4000)
    q = best_q(decoder, x)
    elbo = decoder.exact_elbo(x, DIAGONAL, q).detach()
    torch.manual_seed(3)
    one = iwae_log_marginal(decoder, DIAGONAL, x, q, num_samples=1)
    hundred = iwae_log_marginal(decoder, DIAGONAL, x, q, num_samples=100)
    diff = one - elbo
    assert diff.mean().abs() < 3 * diff.std() / math.sqrt(len(diff))
    gain = hundred - one
    assert gain.mean() > 0.2 and gain.mean() > 5 * gain.std() / math.sqrt(len(gain))


@pytest.mark.parametrize("pairs_per_chunk", [1, 3, 31])  # one pair; 3 points x 1 sample; 7 points x 4 samples
def test_chunking_does_not_change_the_answer(pairs_per_chunk: int) -> None:
    decoder = correlated_decoder().double()
    x = data(decoder, 7)  # float64, so that only rounding can differ
    q = best_q(decoder, x)
    tiny_mb = (pairs_per_chunk + 0.5) * bytes_per_pair(decoder, x) / 2**20
    torch.manual_seed(4)
    chunked = iwae_log_marginal(decoder, DIAGONAL, x, q, num_samples=30, memory_budget_mb=tiny_mb)
    torch.manual_seed(4)
    whole = iwae_log_marginal(decoder, DIAGONAL, x, q, num_samples=30, memory_budget_mb=512.0)
    torch.testing.assert_close(chunked, whole, rtol=0.0, atol=1e-10)


def test_log_weights_near_minus_ten_thousand_are_safe() -> None:
    decoder = correlated_decoder()
    x = data(decoder, 16) + 35.0  # far from the data: log p(x, z) is about -1e4
    exact = decoder.log_marginal(x).detach()
    assert exact.max() < -5e3
    torch.manual_seed(5)
    refined = iwae_log_marginal(decoder, DIAGONAL, x, best_q(decoder, x), num_samples=1000)
    assert torch.isfinite(refined).all() and (refined - exact).mean().abs() < 0.05
    prior = iwae_log_marginal(decoder, DIAGONAL, x, DIAGONAL.prior(16), 1000)
    assert torch.isfinite(prior).all() and (prior < exact).all()


def test_memory_rule_and_no_graph() -> None:
    decoder = correlated_decoder()
    x = data(decoder, 4)
    assert bytes_per_pair(decoder, x) == 5 * DATA_DIM * 4  # 5 tensors as wide as P = 16 float32s
    assert bytes_per_pair(decoder, x, keep_graph=True) == 2 * 5 * DATA_DIM * 4
    params = DIAGONAL.prior(4).requires_grad_(True)
    assert not iwae_log_marginal(decoder, DIAGONAL, x, params, 10).requires_grad


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_samples": 0}, "num_samples"),
        ({"x": torch.zeros(DATA_DIM)}, "x"),
        ({"params": torch.zeros(5, 8)}, "one row per point"),
        ({"params": torch.zeros(4, 6)}, r"shape \(N, 8\)"),
        ({"family": Diagonal(3), "params": torch.zeros(4, 6)}, "latent_dim"),
        ({"memory_budget_mb": 0.0}, "memory_budget_mb"),
    ],
)
def test_bad_inputs_raise(kwargs: dict, name: str) -> None:
    decoder = correlated_decoder()
    args = {"family": DIAGONAL, "x": torch.zeros(4, DATA_DIM), "params": DIAGONAL.prior(4)}
    with pytest.raises(ValueError, match=name):
        iwae_log_marginal(decoder, **{**args, **kwargs})


def test_the_exact_posterior_as_proposal_has_equal_weights() -> None:
    """With q*_full = p(z | x) (the linear-Gaussian posterior is Gaussian), every importance
    weight p(x, z) / q(z) equals p(x): the effective sample size is K, and IWAE with one sample
    is exact. The best diagonal q (negative control) loses most of its samples."""
    decoder = correlated_decoder()
    x = data(decoder, 64)
    torch.manual_seed(6)
    eps = torch.randn(1000, 64, DIAGONAL.latent_dim)
    with torch.no_grad():
        full = log_weights(decoder, FULL, x, exact_posterior(decoder, x), eps)  # (K, B)
        diagonal = log_weights(decoder, DIAGONAL, x, best_q(decoder, x), eps)
    assert (effective_sample_size(full) > 0.999 * 1000).all()
    assert effective_sample_size(diagonal).mean() < 0.8 * 1000
    exact = decoder.log_marginal(x).detach()
    assert (iwae_log_marginal(decoder, FULL, x, exact_posterior(decoder, x), 1) - exact).abs().max() < 1e-3


@pytest.mark.parametrize("device", DEVICES)
def test_runs_on_every_device_present(device: str) -> None:
    """Chunked, on the data's device: CPU everywhere, CUDA too where there is one."""
    decoder = correlated_decoder().to(device)
    x = data(decoder, 32)
    exact = decoder.log_marginal(x).detach()
    estimate = iwae_log_marginal(
        decoder, DIAGONAL, x, best_q(decoder, x), num_samples=5000, memory_budget_mb=0.5
    )
    assert estimate.device == x.device and (estimate - exact).mean().abs() < 0.05
