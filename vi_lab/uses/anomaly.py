"""Outlier scores from a trained model, out-of-distribution sets, and AUROC (An & Cho 2015;
Nalisnick et al. 2019 on likelihoods of out-of-distribution data).

A point that the model finds unlikely is an outlier. Scores, higher = more anomalous:
- `kl`: KL(q || p(z)), the rate: how far the point's posterior moves from the prior;
- `neg_elbo`: -ELBO, an upper bound on -log p(x);
- `neg_log_px`: -log p̂(x), the importance-weighted estimate (`evaluation/iwae.py`).
Each is computed with q from `posterior.infer` (the encoder, or a short per-datapoint fit)
and, when `refine` is on, with q* refined to convergence (`inference/refine.py`), so amortized and
per-datapoint runs are scored on the same footing; -log p̂(x) uses the best q it has.

Out-of-distribution sets that need no download (`--ood SPEC`):
- `noise`: independent coordinates: fair coin flips for binary images, uniform on [0, 1] for
  intensities, and N(mean, std^2) with the in-distribution set's overall mean and std for
  real-valued (synthetic) data;
- `flip`: the in-distribution images upside down;
- `classes:7,8,9`: Fashion-MNIST classes that the run's training data (`data.classes`) left out.
The AUROC of a score is P(score_ood > score_in) + P(tie) / 2, from mid-ranks (Mann-Whitney U).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vi_lab.config import Dataset, LocalFitConfig, override, require
from vi_lab.data.datasets import load_data
from vi_lab.evaluation.iwae import iwae_log_marginal
from vi_lab.inference.objectives import chunked_elbo, kl_to_prior
from vi_lab.inference.refine import refine
from vi_lab.models.model import LatentVariableModel
from vi_lab.runs.board import write_json
from vi_lab.runs.folder import TrainedRun, load_run
from vi_lab.runs.outputs import open_outputs

SPEC_HELP = "noise, flip or classes:C1,C2,... (Fashion-MNIST class ids 0..9)"


def auroc(scores_in: Tensor, scores_out: Tensor) -> float:
    """Area under the ROC curve for telling scores_out (positives) from scores_in; ties count 1/2."""
    if scores_in.numel() == 0 or scores_out.numel() == 0:
        raise ValueError("AUROC needs at least one score in each set")
    scores = torch.cat([scores_in.flatten(), scores_out.flatten()]).double()
    if not torch.isfinite(scores).all():
        raise ValueError("AUROC needs finite scores")
    _, group, counts = torch.unique(scores, sorted=True, return_inverse=True, return_counts=True)
    mid_ranks = counts.cumsum(0) - (counts - 1) / 2.0  # 1-based rank of each group of ties
    ranks = mid_ranks[group]
    num_in, num_out = scores_in.numel(), scores_out.numel()
    u = ranks[num_in:].sum() - num_out * (num_out + 1) / 2.0
    return (u / (num_in * num_out)).item()


@dataclass
class OODSpec:
    text: str  # as given, e.g. "classes:7,8,9"
    kind: str  # noise | flip | classes
    classes: list[int] | None = None

    @property
    def tag(self) -> str:
        """A TensorBoard-friendly name: classes:7,8,9 -> classes_7-8-9."""
        return self.kind if self.classes is None else f"classes_{'-'.join(map(str, self.classes))}"


def parse_ood(text: str) -> OODSpec:
    kind, _, rest = text.partition(":")
    if kind in ("noise", "flip") and not rest:
        return OODSpec(text, kind)
    if kind == "classes":
        try:
            classes = sorted({int(c) for c in rest.split(",")})
        except ValueError:
            classes = []
        if classes and all(0 <= c <= 9 for c in classes):
            return OODSpec(text, kind, classes)
    raise ValueError(f"--ood must be {SPEC_HELP}, got {text!r}")


def check_ood(spec: OODSpec, run: TrainedRun) -> None:
    """Raise ValueError when the set cannot be built for this run."""
    data_config = run.config.data
    if spec.kind == "flip" and run.data.image_shape is None:
        raise ValueError(f"--ood flip needs image data; {run.run_dir} holds {data_config.name.value} data")
    if spec.kind != "classes":
        return
    if data_config.name != Dataset.fashion_mnist:
        raise ValueError(
            f"--ood {spec.text} needs a Fashion-MNIST run; {run.run_dir} holds {data_config.name.value} data "
            "(use --ood noise)"
        )
    if data_config.classes is None:
        raise ValueError(
            f"--ood {spec.text}: {run.run_dir} was trained on all classes (data.classes is null), so none is "
            "held out; train with e.g. data.classes=[0,1,2,3,4,5,6] and use --ood classes:7,8,9"
        )
    seen = sorted(set(spec.classes) & set(data_config.classes))
    if seen:
        raise ValueError(
            f"--ood {spec.text}: class(es) {','.join(map(str, seen))} were in the run's training data "
            f"(data.classes={data_config.classes})"
        )


def noise_like(x: Tensor, generator: torch.Generator) -> Tensor:
    """Pure noise shaped like x (N, P); see `noise` in the module docstring."""
    if bool(((x == 0) | (x == 1)).all()):
        noise = torch.bernoulli(torch.full(x.shape, 0.5), generator=generator)
    elif bool(((x >= 0) & (x <= 1)).all()):
        noise = torch.rand(x.shape, generator=generator)
    else:
        noise = x.mean().item() + x.std().item() * torch.randn(x.shape, generator=generator)
    return noise.to(x.device)


def ood_points(
    spec: OODSpec, run: TrainedRun, x_in: Tensor, split: str, num_points: int, seed: int
) -> Tensor:
    """The out-of-distribution set named by spec, at most num_points points (N, P)."""
    check_ood(spec, run)
    if spec.kind == "noise":
        return noise_like(x_in, torch.Generator().manual_seed(seed))
    if spec.kind == "flip":
        return x_in.view(-1, *run.data.image_shape).flip(-2).flatten(1)
    held_out = dataclasses.replace(run.config.data, classes=spec.classes, num_train=1, num_valid=None)
    return load_data(held_out, run.device).x[split][:num_points]


@dataclass
class AnomalyConfig:
    """Settings of `vi-lab anomaly`; override as `vi-lab anomaly RUN key=value --ood SPEC`."""

    split: str = "test"  # in-distribution points (and the split held-out classes come from)
    num_points: int = 500  # per set
    refine: bool = True  # also score with q* refined to convergence (the run's eval.refine settings)
    max_steps: int | None = None  # cap on refinement steps (null: eval.refine.max_steps)
    elbo_samples: int = 100  # Monte Carlo samples behind each ELBO
    num_samples: int = 500  # K of the importance-weighted log p(x)
    batch_size: int = 500
    memory_budget_mb: float = 1024.0
    seed: int = 0

    def check(self) -> None:
        require(self.split in ("train", "valid", "test"), "split", "must be train, valid or test")
        for key in ("num_points", "elbo_samples", "num_samples", "batch_size"):
            require(getattr(self, key) >= 1, key, "must be positive")
        require(self.max_steps is None or self.max_steps >= 1, "max_steps", "must be positive or null")


@torch.no_grad()
def outlier_scores(
    model: LatentVariableModel, x: Tensor, config: AnomalyConfig, refine_config: LocalFitConfig
) -> dict[str, Tensor]:
    """Per-point scores (N,), higher = more anomalous; see the module docstring."""
    decoder, posterior = model.decoder, model.posterior

    family = posterior.family

    def q_scores(params: Tensor, suffix: str) -> dict[str, Tensor]:
        neg_elbo = -chunked_elbo(decoder, family, x, params, config.batch_size, config.elbo_samples)
        return {
            f"kl{suffix}": kl_to_prior(family, params, config.elbo_samples),
            f"neg_elbo{suffix}": neg_elbo,
        }

    params = posterior.infer(decoder, x)
    scores = q_scores(params, "")
    if config.refine:
        params = refine(decoder, family, x, params, refine_config, config.batch_size).params
        scores.update(q_scores(params, "_refined"))
    log_px = iwae_log_marginal(decoder, family, x, params, config.num_samples, config.memory_budget_mb)
    scores["neg_log_px"] = -log_px
    return scores


def anomaly_run(
    run_dir: str | Path, ood: list[str], overrides: list[str] | tuple[str, ...] = ()
) -> dict[str, Any]:
    """Score in-distribution points and each OOD set; AUROC per score. Writes RUN/uses/anomaly.json
    and TensorBoard scalars `uses/anomaly/{set}/auroc_{score}` with histograms of the scores."""
    config = override(AnomalyConfig(), overrides)
    specs = [parse_ood(text) for text in ood]
    if not specs:
        raise ValueError(f"give at least one --ood SPEC: {SPEC_HELP}")
    run = load_run(run_dir)
    for spec in specs:
        check_ood(spec, run)
    refine_config = run.config.eval.refine
    if config.max_steps is not None:
        refine_config = dataclasses.replace(refine_config, max_steps=config.max_steps)
    torch.manual_seed(config.seed)
    x_in = run.data.x[config.split][: config.num_points]
    scores_in = outlier_scores(run.model, x_in, config, refine_config)

    summary: dict[str, Any] = {
        "split": config.split,
        "num_in": x_in.shape[0],
        "kind": run.config.inference.kind.value,
        "refined": config.refine,
        "sets": {},
    }
    with open_outputs(run) as out:
        for spec in specs:
            x_out = ood_points(spec, run, x_in, config.split, config.num_points, config.seed)
            scores_out = outlier_scores(run.model, x_out, config, refine_config)
            summary["sets"][spec.text] = {
                "num_ood": x_out.shape[0],
                "auroc": {name: auroc(scores_in[name], scores_out[name]) for name in scores_in},
                "mean_in": {name: value.mean().item() for name, value in scores_in.items()},
                "mean_ood": {name: value.mean().item() for name, value in scores_out.items()},
            }
            for name, value in summary["sets"][spec.text]["auroc"].items():
                out.scalar(f"anomaly/{spec.tag}/auroc_{name}", value)
                out.histogram(f"anomaly/{spec.tag}/{name}_in", scores_in[name])
                out.histogram(f"anomaly/{spec.tag}/{name}_ood", scores_out[name])
        write_json(summary, out.folder / "anomaly.json")
    return summary


def format_anomaly(summary: dict[str, Any]) -> str:
    """One row per OOD set, one AUROC column per score."""
    names = list(next(iter(summary["sets"].values()))["auroc"])
    lines = [
        f"AUROC, {summary['num_in']} in-distribution {summary['split']} points vs each set "
        f"({summary['kind']} run; 0.5 = chance, 1 = separated)",
        f"{'ood set':<16}" + "".join(f"{name:>18}" for name in names),
    ]
    for text, result in summary["sets"].items():
        lines.append(f"{text:<16}" + "".join(f"{result['auroc'][name]:18.3f}" for name in names))
    return "\n".join(lines)
