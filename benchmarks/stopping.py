"""The inner loop's stopping rule against its stated bound, and refinement against q*.

1. Wrong stops. A one-parameter `Clock` "family" whose Adam steps are exactly lr each and a
   `Drift` likelihood make a row's window gains independent normals N(drift, 1), the setting
   in which `fit_local`'s bound is stated (at most `error_rate` of such rows stopped in a
   visit while drift >= tol). Prints the fraction of rows stopped within a visit, with its
   binomial standard error, for drifts at and just above tol, under the rule (a t quantile
   with stop_windows - 1 degrees of freedom, the error rate spent over the visit's
   decisions) and under the previous rule (2 standard errors at every check).
2. Refinement (`eval.refine` defaults) from the prior on the tests' linear-Gaussian model
   (`tests/linear_gaussian.py`, 200 points):
   the gap to the closed-form best diagonal q* and the steps taken. The figures of
   docs/inner_loop.md.

Run: python -m benchmarks.stopping [--rows 4000] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import ClassVar
from unittest import mock

import torch
from torch import Tensor

from tests.linear_gaussian import DIAGONAL, dense_decoder, noisy_data
from vi_lab.config import EvalConfig, InnerLoopConfig, LocalFitConfig
from vi_lab.inference import local_fit
from vi_lab.inference.families import Draw, ElboGradient, Family
from vi_lab.inference.local_fit import RowState, fit_local

# the test-sized visit of the bound: 400 steps, windows of 10, no halvings (36 stop decisions)
VISIT = InnerLoopConfig(max_steps=400, check_every=10, check_samples=1, num_decays=0, tol=0.0)


@dataclass(frozen=True)
class Clock(Family):
    """One parameter per row whose gradient is always 1, so that each Adam step moves it by
    exactly lr; its draw is the parameter itself, with no KL."""

    name: ClassVar[str] = "clock"

    @property
    def num_params(self) -> int:
        return 1

    def prior(self, num_points: int, device: torch.device | str = "cpu") -> Tensor:
        return torch.zeros(num_points, 1, device=device)

    def draw(self, params: Tensor, eps: Tensor) -> Draw:
        z = params.expand(eps.shape[0], -1, -1)  # (S, N, 1)
        return Draw(z, torch.zeros(z.shape[:2]), torch.zeros(params.shape[0]))

    def elbo_and_gradient(self, decoder, x, params, eps, beta=1.0, create_graph=False) -> ElboGradient:
        zeros = torch.zeros(params.shape[0])
        return ElboGradient(zeros, zeros, torch.ones_like(params))


class Drift(torch.nn.Module):
    """log p(x | z) = rate * z + noise, noise that common random numbers cannot cancel."""

    latent_dim = 1

    def __init__(self, rate: float, noise: float) -> None:
        super().__init__()
        self.rate, self.noise = rate, noise

    def log_prob(self, x: Tensor, z: Tensor) -> Tensor:
        return self.rate * z[..., 0] + self.noise * torch.randn(z.shape[:-1])  # (S, B)


def stop_rate(config: LocalFitConfig, drift: float, num_rows: int) -> tuple[float, float]:
    """Fraction of rows stopped before `max_steps` and its standard error, when each window's
    estimated gain is N(drift, 1): the clock gains drift per window in expectation, and each
    of the window's two ends carries noise of variance 1 / (2 check_samples)."""
    family = Clock(1)
    noise = math.sqrt(config.check_samples / 2)  # the mean of check_samples differences has variance 1
    decoder = Drift(rate=drift / (config.lr * config.check_every), noise=noise)
    fit = fit_local(
        decoder, family, torch.zeros(num_rows, 1), RowState.prior(num_rows, family, "cpu"), config
    )
    rate = (~fit.capped).float().mean().item()
    return rate, math.sqrt(max(rate * (1 - rate), 1 / num_rows) / num_rows)


def previous_thresholds(config: LocalFitConfig) -> Tensor:
    """The rule this one replaced: 2 standard errors (a normal quantile) at every check."""
    return torch.full((max(1, local_fit.checks_per_visit(config)),), 2.0, dtype=torch.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    se_of_mean = 1 / math.sqrt(VISIT.stop_windows)
    print(f"Wrong stops in a visit of {VISIT.max_steps} steps ({local_fit.checks_per_visit(VISIT)} checks),")
    print(f"bound error_rate = {VISIT.error_rate}; window gains N(drift, 1), tol = {VISIT.tol}")
    print("| drift | rule | stopped (± SE) |\n|---|---|---|")
    for margin in (0.0, 0.5):
        drift = VISIT.tol + margin * se_of_mean
        for name, threshold in (
            ("t, error spent over the visit", local_fit.decision_thresholds),
            ("previous", previous_thresholds),
        ):
            torch.manual_seed(args.seed)
            with mock.patch.object(local_fit, "decision_thresholds", threshold):
                rate, se = stop_rate(VISIT, drift, args.rows)
            print(f"| tol + {margin} SE | {name} | {rate:.4f} ± {se:.4f} |")
    model = dense_decoder()
    x = noisy_data(model)  # (200, 16)
    torch.manual_seed(args.seed)
    fit = fit_local(model, DIAGONAL, x, RowState.prior(x.shape[0], DIAGONAL, x.device), EvalConfig().refine)
    with torch.no_grad():
        best = model.best_in(DIAGONAL, x)
        gap = model.exact_elbo(x, DIAGONAL, best) - model.exact_elbo(x, DIAGONAL, fit.state.params)
    print(
        f"\nRefinement from the prior ({x.shape[0]} linear-Gaussian points, eval.refine defaults): "
        f"gap to q* {gap.mean():.4f} ± {gap.std() / math.sqrt(gap.numel()):.4f} nats (max {gap.max():.4f}), "
        f"{fit.steps.float().mean():.0f} steps on average, {int(fit.capped.sum())} capped"
    )


if __name__ == "__main__":
    main()
