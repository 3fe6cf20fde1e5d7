"""The gradient estimators of `vi_lab.inference.estimators` compared on a trained run.

`compare_estimators` measures the mean, variance and signal-to-noise ratio of the
reparameterization (Kingma & Welling 2014) and score-function (Williams 1992) estimators of
the ELBO's gradient on one batch and one q, against the exact gradient where it is known
(the linear-Gaussian model); `gradvar_run` is `vi-lab gradvar`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vi_lab.config import ConfigError, override
from vi_lab.inference.estimators import ESTIMATORS, estimate, exact_gradient, summarize
from vi_lab.inference.families import Family
from vi_lab.inference.objectives import Decoder
from vi_lab.runs.board import write_json
from vi_lab.runs.folder import load_run
from vi_lab.runs.outputs import open_outputs


def compare_estimators(
    decoder: Decoder,
    family: Family,
    x: Tensor,
    params: Tensor,
    num_samples: int,
    num_repeats: int,
    memory_budget_mb: float = 512.0,
) -> dict[str, dict[str, dict[str, float]]]:
    """{estimator: {group: stats}} on one batch and one q (its family's blocks of params), with
    each estimator's variance ratio to the reparameterization estimator's. The leave-one-out
    estimator needs num_samples >= 2; the score function, a family with a closed-form density."""
    exact = exact_gradient(decoder, family, x, params)
    names = [e for e in ESTIMATORS if num_samples >= 2 or e != "score_function_loo"]
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name in names:
        grads = estimate(name, decoder, family, x, params, num_samples, num_repeats, memory_budget_mb)
        results[name] = {g: summarize(grads[g], None if exact is None else exact[g]) for g in family.groups}
    for name in names:
        for group in family.groups:
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
    family = run.model.family
    with torch.no_grad():
        params = run.model.posterior.infer(decoder, x)
    try:
        results = compare_estimators(
            decoder, family, x, params, config.num_samples, config.repeats, config.memory_budget_mb
        )
    except NotImplementedError as error:  # the score function needs log q(z) at a given z
        raise ValueError(f"{run_dir}: {error}, which the score-function estimator needs") from None
    summary = {
        "split": config.split,
        "num_points": x.shape[0],
        "num_samples": config.num_samples,
        "repeats": config.repeats,
        "family": family.name,
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
