"""BDMC against the closed-form log p(x) of a linear-Gaussian decoder."""

from __future__ import annotations

import pytest
import torch

from tests.linear_gaussian import correlated_decoder, error_and_standard_error
from vi_lab.evaluation.bdmc import bdmc_bounds, simulate


def test_the_sandwich_brackets_the_exact_value_and_narrows_with_more_steps() -> None:
    """On 300 simulated points, the lower bound is below the exact log p(x) and the upper bound
    above it (each within 3 standard errors of the per-point differences), and the width at 50
    steps is smaller than at 5 by more than 3 standard errors (paired). Negative control: reverse
    chains started from prior draws instead of the exact posterior samples give no upper bound."""
    decoder = correlated_decoder()
    torch.manual_seed(0)
    x, z = simulate(decoder, 300)
    exact = decoder.log_marginal(x).detach()
    widths = []
    for num_steps in (5, 50):
        torch.manual_seed(1)
        lower, upper = bdmc_bounds(decoder, x, z, num_steps=num_steps, num_leapfrog=2, num_chains=2)
        error, se = error_and_standard_error(lower, exact)
        assert error < 3 * se, (num_steps, error, se)
        error, se = error_and_standard_error(upper, exact)
        assert error > -3 * se, (num_steps, error, se)
        widths.append(upper - lower)
    shrink, se = error_and_standard_error(widths[0], widths[1])
    assert shrink > 3 * se, (shrink, se)
    assert widths[0].mean() > 0.5  # a short schedule leaves a visible sandwich

    _, not_upper = bdmc_bounds(decoder, x, torch.randn_like(z), num_steps=5, num_leapfrog=2, num_chains=2)
    error, se = error_and_standard_error(not_upper, exact)
    assert error < -3 * se, (error, se)


def test_z_must_hold_one_exact_sample_per_point() -> None:
    decoder = correlated_decoder()
    x, z = simulate(decoder, 4)
    with pytest.raises(ValueError, match="one exact sample per point"):
        bdmc_bounds(decoder, x, z[:3])
