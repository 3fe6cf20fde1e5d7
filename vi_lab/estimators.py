"""Two Monte Carlo estimators of the ELBO's gradient with respect to q's (loc, log_scale).

The ELBO is E_q[f(z)] - KL(q || p(z)) with f(z) = log p(x | z) and q = N(loc, diag s^2),
s = exp(log_scale). The KL gradient is exact and shared (∂/∂loc = loc,
∂/∂log_scale = s^2 - 1), so the estimators differ only where the lectures (003) say
they do, in the gradient of E_q[f(z)], from M samples z_m = loc + s * eps_m:
- reparameterization (Kingma & Welling 2014): mean_m ∇_z f(z_m) for loc, and
  mean_m ∇_z f(z_m) * s * eps_m for log_scale;
- score function, the log-derivative trick (Williams 1992): mean_m (f(z_m) - b_m) ∇ log q(z_m),
  with ∇_loc log q = eps / s and ∇_log_scale log q = eps^2 - 1, and a baseline b_m that is
  0 (`none`) or the mean of f over the other M - 1 samples (`loo`, leave-one-out: independent
  of z_m, so the estimator stays unbiased; Mnih & Rezende 2016, Kool et al. 2019).

Every estimator returns `num_repeats` independent estimates per point: the R x M samples
share the sample dimension of one decoder pass. `study` compares their means and variances
on one batch and one q; `gradvar_run` is `vi-lab gradvar`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vi_lab import gaussian
from vi_lab.board import write_json
from vi_lab.config import ConfigError, override
from vi_lab.marginal import bytes_per_pair
from vi_lab.objectives import Decoder, elbo_and_gradient
from vi_lab.runs import load_run
from vi_lab.uses import open_outputs

GROUPS = ("loc", "log_scale")
BASELINES = ("none", "loo")
ESTIMATORS = ("reparameterization", "score_function", "score_function_loo")


def _draw(loc: Tensor, log_scale: Tensor, num_samples: int, num_repeats: int) -> tuple[Tensor, Tensor]:
    """Standard-normal eps and z = loc + s * eps, each (R, M, B, D)."""
    eps = torch.randn((num_repeats, num_samples, *loc.shape), dtype=loc.dtype, device=loc.device)
    return eps, loc + log_scale.exp() * eps


def reparameterization_gradient(
    decoder: Decoder, x: Tensor, loc: Tensor, log_scale: Tensor, num_samples: int = 1, num_repeats: int = 1
) -> dict[str, Tensor]:
    """R independent reparameterization estimates of ∇ ELBO per point: {"loc", "log_scale"}, (R, B, D).

    `objectives.elbo_and_gradient` (the inner loop's gradient) on R copies of the batch.
    """
    copies = [t.detach().repeat(num_repeats, 1) for t in (x, loc, log_scale)]  # (R B, .) each
    _, grad_loc, grad_log_scale = elbo_and_gradient(decoder, *copies, num_samples)
    return {
        "loc": grad_loc.view(num_repeats, *loc.shape),
        "log_scale": grad_log_scale.view(num_repeats, *loc.shape),
    }


def score_function_gradient(
    decoder: Decoder,
    x: Tensor,
    loc: Tensor,
    log_scale: Tensor,
    num_samples: int = 1,
    num_repeats: int = 1,
    baseline: str = "none",
) -> dict[str, Tensor]:
    """R independent score-function estimates of ∇ ELBO per point: {"loc", "log_scale"}, each (R, B, D)."""
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {', '.join(BASELINES)}, got {baseline!r}")
    if baseline == "loo" and num_samples < 2:
        raise ValueError("the leave-one-out baseline needs num_samples >= 2")
    loc, log_scale = loc.detach(), log_scale.detach()
    eps, z = _draw(loc, log_scale, num_samples, num_repeats)
    with torch.no_grad():
        f = decoder.log_prob(x, z.flatten(0, 1)).view(num_repeats, num_samples, -1, 1)  # (R, M, B, 1)
    if baseline == "loo":
        f = f - (f.sum(1, keepdim=True) - f) / (num_samples - 1)
    kl_loc, kl_log_scale = gaussian.kl_to_standard_normal_gradient(loc, log_scale)
    return {
        "loc": (f * eps * torch.exp(-log_scale)).mean(1) - kl_loc,
        "log_scale": (f * (eps.square() - 1.0)).mean(1) - kl_log_scale,
    }


def estimate(
    estimator: str,
    decoder: Decoder,
    x: Tensor,
    loc: Tensor,
    log_scale: Tensor,
    num_samples: int,
    num_repeats: int,
    memory_budget_mb: float = 512.0,
) -> dict[str, Tensor]:
    """`num_repeats` estimates by the named estimator, in chunks of repeats that fit the budget."""
    pairs_per_repeat = num_samples * x.shape[0]
    max_pairs = int(memory_budget_mb * 2**20) // bytes_per_pair(decoder, x, keep_graph=True)
    chunk = max(1, max_pairs // pairs_per_repeat)
    parts = []
    for start in range(0, num_repeats, chunk):
        repeats = min(chunk, num_repeats - start)
        if estimator == "reparameterization":
            parts.append(reparameterization_gradient(decoder, x, loc, log_scale, num_samples, repeats))
        else:
            baseline = "loo" if estimator == "score_function_loo" else "none"
            parts.append(score_function_gradient(decoder, x, loc, log_scale, num_samples, repeats, baseline))
    return {group: torch.cat([part[group] for part in parts]) for group in GROUPS}


def exact_gradient(decoder: Decoder, x: Tensor, loc: Tensor, log_scale: Tensor) -> dict[str, Tensor] | None:
    """∇ ELBO per point from a closed-form ELBO (`exact_elbo`, the linear-Gaussian decoder), else None."""
    exact_elbo = getattr(decoder, "exact_elbo", None)
    if exact_elbo is None:
        return None
    with torch.enable_grad():
        loc, log_scale = loc.detach().requires_grad_(True), log_scale.detach().requires_grad_(True)
        grads = torch.autograd.grad(exact_elbo(x, loc, log_scale).sum(), (loc, log_scale))
    return dict(zip(GROUPS, grads, strict=True))


def summarize(grads: Tensor, exact: Tensor | None = None) -> dict[str, float]:
    """Statistics of R estimates (R, B, D) of one parameter group, over its B x D coordinates.

    variance: the mean per-coordinate variance across repeats; snr: the mean over coordinates
    of |mean| / std; with an exact gradient, max_abs_z: the largest |mean - exact| in standard
    errors of the mean (unbiased estimators stay within a few).
    """
    mean, std = grads.mean(0), grads.std(0)  # (B, D) each
    stats = {"variance": std.square().mean().item(), "snr": (mean.abs() / std).mean().item()}
    if exact is not None:
        stats["max_abs_z"] = ((mean - exact).abs() / (std / math.sqrt(grads.shape[0]))).max().item()
    return stats


def study(
    decoder: Decoder,
    x: Tensor,
    loc: Tensor,
    log_scale: Tensor,
    num_samples: int,
    num_repeats: int,
    memory_budget_mb: float = 512.0,
) -> dict[str, dict[str, dict[str, float]]]:
    """{estimator: {group: stats}} on one batch and one q, with each estimator's variance ratio
    to the reparameterization estimator's. The leave-one-out estimator needs num_samples >= 2."""
    exact = exact_gradient(decoder, x, loc, log_scale)
    names = [e for e in ESTIMATORS if num_samples >= 2 or e != "score_function_loo"]
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name in names:
        grads = estimate(name, decoder, x, loc, log_scale, num_samples, num_repeats, memory_budget_mb)
        results[name] = {g: summarize(grads[g], None if exact is None else exact[g]) for g in GROUPS}
    for name in names:
        for group in GROUPS:
            stats = results[name][group]
            stats["variance_ratio"] = stats["variance"] / results["reparameterization"][group]["variance"]
    return results


@dataclass
class GradVarConfig:
    """Settings of `vi-lab gradvar`; override as `vi-lab gradvar RUN key=value`."""

    split: str = "test"
    num_points: int = 16  # the batch: the first points of the split
    num_samples: int = 4  # M, samples per estimate (the leave-one-out baseline needs 2)
    repeats: int = 1000  # R, independent estimates whose spread is measured
    memory_budget_mb: float = 512.0
    seed: int = 0

    def check(self) -> None:
        if self.split not in ("train", "valid", "test"):
            raise ConfigError("split: must be train, valid or test")
        for key in ("num_points", "num_samples"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be positive")
        if self.repeats < 2:
            raise ConfigError("repeats: must be at least 2 (a variance needs two estimates)")
        if not self.memory_budget_mb > 0:
            raise ConfigError("memory_budget_mb: must be positive")


def gradvar_run(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Compare the estimators at the run's q (`posterior.infer`) on a batch of one split;
    writes RUN/uses/gradvar.json and the TensorBoard scalars `uses/gradvar/...`."""
    config = override(GradVarConfig(), overrides)
    run = load_run(run_dir)
    torch.manual_seed(config.seed)
    decoder = run.model.decoder
    x = run.data.x[config.split][: config.num_points]
    with torch.no_grad():
        loc, log_scale = run.model.posterior.infer(decoder, x)
    results = study(decoder, x, loc, log_scale, config.num_samples, config.repeats, config.memory_budget_mb)
    summary = {
        "split": config.split,
        "num_points": x.shape[0],
        "num_samples": config.num_samples,
        "repeats": config.repeats,
        "exact_gradient": "max_abs_z" in results["reparameterization"]["loc"],
        "estimators": results,
    }
    with open_outputs(run) as out:
        write_json(summary, out.folder / "gradvar.json")
        for name, groups in results.items():
            for group, stats in groups.items():
                for key in ("variance", "snr", "variance_ratio"):
                    out.scalar(f"gradvar/{group}/{name}_{key}", stats[key])
    return summary


def format_gradvar(summary: dict[str, Any]) -> str:
    """A plain-text table: one row per estimator and parameter group."""
    extra = "  max |z| vs exact" if summary["exact_gradient"] else ""
    lines = [
        f"gradient of the ELBO at q, {summary['num_points']} {summary['split']} points, "
        f"M = {summary['num_samples']} samples per estimate, {summary['repeats']} repeats",
        f"{'estimator':<20} {'group':<10} {'variance':>12} {'ratio to rep.':>14} {'SNR':>8}{extra}",
    ]
    for name, groups in summary["estimators"].items():
        for group, s in groups.items():
            z = f"  {s['max_abs_z']:16.2f}" if "max_abs_z" in s else ""
            lines.append(
                f"{name:<20} {group:<10} {s['variance']:12.4g} {s['variance_ratio']:14.4g} {s['snr']:8.3f}{z}"
            )
    return "\n".join(lines)
