"""Tests of the AIS estimate of log p(x) against the closed form of a linear-Gaussian decoder."""

from __future__ import annotations

import re
import time

import pytest
import torch

from tests.linear_gaussian import (
    DATA_DIM,
    DEVICES,
    DIAGONAL,
    best_q,
    correlated_decoder,
    data,
    error_and_standard_error,
    prior,
)
from vi_lab.evaluation.ais import SCHEDULES, ais_log_marginal, anneal, annealing_schedule
from vi_lab.evaluation.iwae import iwae_log_marginal


def test_from_prior_and_from_best_diagonal_match_exact() -> None:
    decoder = correlated_decoder()
    x = data(decoder, 64)
    exact = decoder.log_marginal(x).detach()
    q = best_q(decoder, x)
    torch.manual_seed(2)  # one call for both starts: half the Python overhead
    both = ais_log_marginal(decoder, DIAGONAL, torch.cat([x, x]), torch.cat([prior(x), q]), num_steps=500)
    from_prior, from_q = both.chunk(2)
    for estimate in (from_prior, from_q):
        error, standard_error = error_and_standard_error(estimate, exact)
        assert abs(error) < 0.05
        assert error < 3 * standard_error  # a stochastic lower bound
    assert (from_q - exact).abs().mean() <= (from_prior - exact).abs().mean()


def _ratio_mean(estimate: torch.Tensor, exact: torch.Tensor) -> tuple[float, float]:
    """Mean of the weights over Z, exp(log p^(x) - log p(x)), and its standard error."""
    ratio = (estimate - exact).exp()
    return ratio.mean().item(), ratio.std().item() / len(ratio) ** 0.5


def test_the_weights_are_unbiased_for_the_marginal() -> None:
    """With the step sizes tuned on pilot chains and frozen, one chain's weight w has
    E[w] = p(x): over 4000 points, mean(w / Z) = 1 within 3 standard errors. Negative
    control: the per-point maximum of two such estimates is biased upwards by far more."""
    decoder = correlated_decoder()
    x = data(decoder, 4000)
    exact = decoder.log_marginal(x).detach()
    settings = {"num_steps": 20, "num_leapfrog": 2, "num_chains": 1, "pilot_chains": 1}
    torch.manual_seed(6)
    first = ais_log_marginal(decoder, DIAGONAL, x, best_q(decoder, x), **settings)
    mean, standard_error = _ratio_mean(first, exact)
    assert abs(mean - 1) < 3 * standard_error, (mean, standard_error)

    second = ais_log_marginal(decoder, DIAGONAL, x, best_q(decoder, x), **settings)
    mean, standard_error = _ratio_mean(torch.maximum(first, second), exact)
    assert mean - 1 > 3 * standard_error, (mean, standard_error)


def test_estimating_chains_use_the_given_step_sizes() -> None:
    """Frozen kernels: the estimating chains run the step sizes they are given, move by move,
    while pilots adapt theirs to the acceptance rate."""
    decoder = correlated_decoder()
    x = data(decoder, 8)
    betas = annealing_schedule(30)
    args = (decoder, DIAGONAL, x, best_q(decoder, x), betas, 2)
    with torch.no_grad():
        _, tuned = anneal(*args, 4, 0.05, 0.65)
        _, used = anneal(*args, 16, tuned, 0.65)
    assert tuned.shape == (29, 8) and not torch.equal(tuned[0], tuned[-1])
    assert torch.equal(used, tuned)


@pytest.mark.parametrize("num_steps", [10, 100])
def test_short_runs_stay_below_exact(num_steps: int) -> None:
    decoder = correlated_decoder()
    x = data(decoder, 256)
    exact = decoder.log_marginal(x).detach()
    torch.manual_seed(3)
    error, standard_error = error_and_standard_error(
        ais_log_marginal(decoder, DIAGONAL, x, prior(x), num_steps=num_steps, num_chains=4), exact
    )
    assert error < 3 * standard_error


def test_one_step_is_plain_importance_sampling() -> None:
    decoder = correlated_decoder()
    x = data(decoder, 4000)
    q = best_q(decoder, x)
    torch.manual_seed(4)
    one_chain = ais_log_marginal(decoder, DIAGONAL, x, q, num_steps=1, num_chains=1)
    error, standard_error = error_and_standard_error(one_chain, decoder.exact_elbo(x, DIAGONAL, q).detach())
    assert abs(error) < 3 * standard_error
    many_chains = ais_log_marginal(decoder, DIAGONAL, x, q, num_steps=1, num_chains=64)
    iwae = iwae_log_marginal(decoder, DIAGONAL, x, q, num_samples=64)
    error, standard_error = error_and_standard_error(many_chains, iwae)  # same points: a paired test
    assert abs(error) < 3 * standard_error


@pytest.mark.parametrize("schedule", ["geometric", "linear"])
def test_other_schedules_and_a_small_memory_budget(schedule: str) -> None:
    decoder = correlated_decoder()
    x = data(decoder, 32)
    exact = decoder.log_marginal(x).detach()
    torch.manual_seed(5)
    estimate = ais_log_marginal(
        decoder,
        DIAGONAL,
        x,
        best_q(decoder, x),
        num_steps=100,
        num_chains=64,
        schedule=schedule,
        memory_budget_mb=0.47,
    )  # 64 chains x 15 points x 512 bytes fit in 0.47 MB: chunks of 15, 15 and 2 points
    error, _ = error_and_standard_error(estimate, exact)
    assert estimate.shape == (32,) and abs(error) < 0.05


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_schedules_go_from_zero_to_one(schedule: str) -> None:
    betas = torch.tensor(annealing_schedule(50, schedule))
    assert len(betas) == 51 and betas[0] == 0.0 and betas[-1] == pytest.approx(1.0)
    assert (betas.diff() > 0).all()
    assert annealing_schedule(1, schedule) == pytest.approx([0.0, 1.0])


def test_decoder_parameters_get_no_grad_and_stay_put() -> None:
    decoder = correlated_decoder()
    before = [p.detach().clone() for p in decoder.parameters()]
    x = data(decoder, 8)
    estimate = ais_log_marginal(decoder, DIAGONAL, x, best_q(decoder, x), num_steps=20)
    assert not estimate.requires_grad
    assert all(p.grad is None for p in decoder.parameters())
    assert all(torch.equal(p, b) for p, b in zip(decoder.parameters(), before, strict=True))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_steps": 0}, "num_steps"),
        ({"num_leapfrog": 0}, "num_leapfrog"),
        ({"num_chains": 0}, "num_chains"),
        ({"pilot_chains": 0}, "pilot_chains"),
        ({"step_size": 0.0}, "step_size"),
        ({"target_acceptance": 1.0}, "target_acceptance"),
        ({"memory_budget_mb": -1.0}, "memory_budget_mb"),
        ({"schedule": "cosine"}, "schedule"),
        ({"x": torch.zeros(4, 1, DATA_DIM)}, "x"),
        ({"params": torch.zeros(5, 8)}, "one row per point"),
        ({"params": torch.zeros(4, 3)}, "params"),
    ],
)
def test_bad_inputs_raise(kwargs: dict, name: str) -> None:
    decoder = correlated_decoder()
    args = {"family": DIAGONAL, "x": torch.zeros(4, DATA_DIM), "params": DIAGONAL.prior(4)}
    with pytest.raises(ValueError, match=name):
        ais_log_marginal(decoder, **{**args, **kwargs})


@pytest.mark.parametrize("device", DEVICES)
def test_runs_on_every_device_present(device: str) -> None:
    """Chunked, on the data's device: CPU everywhere, CUDA too where there is one."""
    decoder = correlated_decoder().to(device)
    x = data(decoder, 32)
    exact = decoder.log_marginal(x).detach()
    estimate = ais_log_marginal(
        decoder, DIAGONAL, x, best_q(decoder, x), num_steps=200, memory_budget_mb=0.05
    )
    assert estimate.device == x.device and (estimate - exact).mean().abs() < 0.05


def test_cost_is_reported_before_the_work_and_close_to_it() -> None:
    decoder = correlated_decoder()
    x = data(decoder, 200)
    lines = []
    started = time.perf_counter()
    ais_log_marginal(decoder, DIAGONAL, x, prior(x), num_steps=100, num_chains=8, report=lines.append)
    seconds = time.perf_counter() - started
    (line,) = lines
    passes = 2 * (1 + 99 * 10)  # per anneal (pilots, then the estimating chains): one evaluation at
    # the start, then 10 leapfrog steps for each of beta_1..beta_99
    assert re.match(
        rf"AIS: 200 points x \(4 pilot \+ 8\) chains, 100 steps of 10 leapfrog steps: "
        rf"{passes:,} gradient passes",
        line,
    )
    estimate = float(re.search(r"about ([\d.]+) s", line).group(1))
    # the right order of magnitude, on a CPU that other jobs may share
    assert seconds / 10 <= estimate <= seconds * 10, (line, seconds)
