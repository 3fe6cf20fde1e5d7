"""The gaps of Cremer, Li & Duvenaud (2018), measured on a set of points.

    amortization gap  = L[q*] - L[q]        (encoder q vs the best q of its family)
    approximation gap = log p(x) - L[q*]    (the family vs the true posterior)
    inference gap     = log p(x) - L[q]
and, for every kind of posterior, the gap left by its own inference on new points,
    inferred gap      = L[q*] - L[q_inferred]
with q_inferred = `posterior.infer`: the encoder's q (amortized), the encoder's q after
the K training-time steps (semi-amortized: what the decoder learned from), the training
inner loop run from the prior (per-datapoint).
L[q*] comes from test-time refinement (`inference/refine.py`) in the run's own family and,
on request (`eval.families`), in other families on the same points, giving Cremer et al.'s
Table 2: L[q*_F] per family F, with approximation gap log p(x) - L[q*_F] and amortization
gap L[q*_F] - L[q]. The run's own family is refined from the posterior's guess (or the
prior, `eval.init`; with `best`, from both, keeping per point the q* with the better bound,
whose ELBO is then estimated afresh), every other family from the prior. log p(x) comes from the
importance-weighted bound (`iwae.py`) or AIS (`ais.py`) with, per point, the refined q of
the family with the best L[q*] as proposal; `log_px_exact` from the closed form
(linear-Gaussian) or quadrature (a 2-D latent, `quadrature.py`). Means are per datapoint
in nats, each with the standard error of its per-point values.

Every point is measured on its own, so under torchrun the points are sharded over the
ranks (point j on rank j mod W, as `distributed.Shard` assigns rows) and the per-point
results gathered: every rank gets the report a single process would give, except that
each rank draws its own Monte Carlo numbers (`distributed.decorrelate_rng`), so per-point
values agree with a single process's within Monte Carlo error, not bit for bit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from vi_lab import distributed
from vi_lab.chunking import map_points, memory_budget_mb
from vi_lab.config import Estimator, EvalConfig, FamilyName, InferenceConfig, RefineInit
from vi_lab.evaluation.ais import ais_log_marginal
from vi_lab.evaluation.iwae import iwae_log_marginal
from vi_lab.evaluation.quadrature import exact_log_marginal
from vi_lab.inference.families import Family, build_family
from vi_lab.inference.local_fit import window_gain
from vi_lab.inference.objectives import Decoder, chunked_elbo
from vi_lab.inference.refine import refine
from vi_lab.models.model import LatentVariableModel

ELBO_SAMPLES = 100  # Monte Carlo samples behind each reported per-point ELBO


SUMMARY_KEYS = (
    "elbo_amortized",
    "elbo_inferred",
    "elbo_refined",
    "log_px",
    "log_px_exact",
    "amortization_gap",
    "inferred_gap",
    "approximation_gap",
    "inference_gap",
)
FAMILY_KEYS = ("elbo_refined", "approximation_gap", "amortization_gap")
BEST_KEYS = ("log_px_iwae", "log_px_ais", "ais_minus_iwae")  # estimator best only


@dataclass
class Refinement:
    """q* of one family on the report's points."""

    elbo: Tensor  # (N,) L[q*]
    params: Tensor  # (N, P)
    steps: Tensor  # (N,) refinement steps
    capped: Tensor  # (N,) bool: still improving at the step cap
    seconds: float


@dataclass
class GapReport:
    family: str  # the run's own family: the first of `refined`
    elbo_amortized: Tensor | None  # (N,) L[q], None without an encoder
    elbo_inferred: Tensor  # (N,) L[q_inferred], q from `posterior.infer`
    refined: dict[str, Refinement]  # family name -> its q*, the run's own first
    log_px: Tensor  # (N,) log p^(x)
    proposal: Tensor  # (N,) index into `refined` of the family whose q* was the proposal
    log_px_exact: Tensor | None  # (N,) closed form or quadrature
    log_px_exact_error: Tensor | None  # (N,) its error bound (0 for the closed form)
    log_px_seconds: float
    estimator: str
    num_samples: int
    proposal_dof: float | None = None  # IWAE's Student-t proposal (eval.proposal_dof), None: q* itself
    log_px_iwae: Tensor | None = None  # (N,) with estimator best: both estimates, per point
    log_px_ais: Tensor | None = None
    encoder_start_won: Tensor | None = None  # (N,) with init best (and an encoder): 1 where it won

    @property
    def own(self) -> Refinement:
        return self.refined[self.family]

    def per_point(self) -> dict[str, np.ndarray]:
        """Per-point values: the run's own family's unsuffixed, every family's as `key.family`."""
        own = self.own
        values = {
            "elbo_amortized": self.elbo_amortized,
            "elbo_inferred": self.elbo_inferred,
            "elbo_refined": own.elbo,
            "log_px": self.log_px,
            "log_px_exact": self.log_px_exact,
            "log_px_exact_error": self.log_px_exact_error,
            "refine_steps": own.steps,
            "proposal": self.proposal,
        }
        if self.elbo_amortized is not None:
            values["amortization_gap"] = own.elbo - self.elbo_amortized
            values["inference_gap"] = self.log_px - self.elbo_amortized
        values["inferred_gap"] = own.elbo - self.elbo_inferred
        values["approximation_gap"] = self.log_px - own.elbo
        if self.log_px_ais is not None and self.log_px_iwae is not None:
            values["log_px_iwae"], values["log_px_ais"] = self.log_px_iwae, self.log_px_ais
            values["ais_minus_iwae"] = self.log_px_ais - self.log_px_iwae
        if self.encoder_start_won is not None:
            values["encoder_start_won"] = self.encoder_start_won
        for name, refined in self.refined.items():
            values[f"elbo_refined.{name}"] = refined.elbo
            values[f"refine_steps.{name}"] = refined.steps
            values[f"approximation_gap.{name}"] = self.log_px - refined.elbo
            if self.elbo_amortized is not None:
                values[f"amortization_gap.{name}"] = refined.elbo - self.elbo_amortized
        return {k: v.detach().cpu().numpy() for k, v in values.items() if v is not None}

    def summary(self) -> dict[str, Any]:
        points = self.per_point()
        result: dict[str, Any] = {}
        for name in (*SUMMARY_KEYS, *BEST_KEYS):
            result.update(_mean_and_se(points, name, name))
        own = self.own
        result.update(
            num_points=int(own.elbo.shape[0]),
            family=self.family,
            estimator=self.estimator,
            num_samples=self.num_samples,
            proposal_dof=self.proposal_dof,
            refine_steps_mean=float(points["refine_steps"].mean()),
            refine_steps_max=int(points["refine_steps"].max()),
            refine_num_capped=int(own.capped.sum().item()),
            refine_seconds=own.seconds,
            log_px_seconds=self.log_px_seconds,
        )
        if self.encoder_start_won is not None:  # init best: which start gave q* how often
            won = int(self.encoder_start_won.sum().item())
            result["init_wins"] = {"encoder": won, "prior": int(own.elbo.shape[0]) - won}
        if "log_px_exact_error" in points:
            result["log_px_exact_error_max"] = float(points["log_px_exact_error"].max())
        result["families"] = {}
        for index, (name, refined) in enumerate(self.refined.items()):
            entry: dict[str, Any] = {}
            for key in FAMILY_KEYS:
                entry.update(_mean_and_se(points, f"{key}.{name}", key))
            steps = points[f"refine_steps.{name}"]
            entry.update(
                refine_steps_mean=float(steps.mean()),
                refine_steps_max=int(steps.max()),
                refine_num_capped=int(refined.capped.sum().item()),
                refine_seconds=refined.seconds,
                proposal_points=int((points["proposal"] == index).sum()),
            )
            result["families"][name] = entry
        return result


def _mean_and_se(points: dict[str, np.ndarray], key: str, name: str) -> dict[str, float | None]:
    """{name: mean, name_se: its standard error} of points[key], both None when it is absent."""
    value = points.get(key)
    return {
        name: None if value is None else float(value.mean()),
        f"{name}_se": None if value is None else standard_error(value),
    }


def standard_error(values: np.ndarray) -> float:
    """Standard error of the mean of per-point values (NaN for fewer than two)."""
    if values.shape[0] < 2:
        return math.nan
    return float(values.std(ddof=1) / math.sqrt(values.shape[0]))


def measure_gaps(
    model: LatentVariableModel,
    x: Tensor,
    config: EvalConfig,
    num_samples: int | None = None,
    progress: bool = False,
    families: list[Family] | None = None,
) -> GapReport:
    """Refine q on x in the run's own family (and `families`), estimate log p(x), and collect
    the per-point values.

    `num_samples` overrides config.num_samples (cheap evaluations during training); `families`
    (`eval_families`) start with the run's own, which is the default.
    Under torchrun a collective: each rank measures its share of x, all get every point.
    """
    families = [model.family] if families is None else families
    if distributed.world_size() == 1:
        return _tighter(_measure_gaps(model, x, config, num_samples, progress, families), config)
    shard = distributed.current_shard()
    if x.shape[0] < shard.world_size:
        raise ValueError(f"{x.shape[0]} points cannot be shared by {shard.world_size} processes")
    points = shard.rows(x.shape[0], x.device)
    distributed.decorrelate_rng()
    report = _measure_gaps(
        model, x[points], config, num_samples, progress and distributed.is_main(), families
    )

    def gather(value: Any) -> Any:  # every tensor of the report has one row per point
        return distributed.gather_rows(value, points, x.shape[0]) if isinstance(value, Tensor) else value

    refined = {
        name: replace(
            r,
            **{f.name: gather(getattr(r, f.name)) for f in fields(r) if f.name != "seconds"},
            seconds=distributed.all_max(r.seconds),
        )
        for name, r in report.refined.items()
    }
    per_point = {f.name: gather(getattr(report, f.name)) for f in fields(report) if f.name != "refined"}
    per_point["log_px_seconds"] = distributed.all_max(report.log_px_seconds)
    return _tighter(replace(report, **per_point, refined=refined), config)


def _tighter(report: GapReport, config: EvalConfig) -> GapReport:
    """With estimator best, log p(x) := the estimate (IWAE or AIS) with the larger mean over all
    the points; both are stochastic lower bounds, and a per-point maximum would be biased upwards
    by the Monte Carlo noise of both."""
    if report.log_px_iwae is None or report.log_px_ais is None:
        return report
    if report.log_px_ais.mean() > report.log_px_iwae.mean():
        return replace(
            report, log_px=report.log_px_ais, estimator="best: ais", num_samples=config.ais.num_chains
        )
    return replace(report, log_px=report.log_px_iwae, estimator="best: iwae")


def eval_families(own: Family, names: list[FamilyName], inference: InferenceConfig) -> list[Family]:
    """The run's own family, then the others named (flows with the run's `inference.flow`)."""
    others = [
        build_family(name, own.latent_dim, inference)
        for name in dict.fromkeys(names)
        if name.value != own.name
    ]
    return [own, *others]


def _measure_gaps(
    model: LatentVariableModel,
    x: Tensor,
    config: EvalConfig,
    num_samples: int | None,
    progress: bool,
    families: list[Family],
) -> GapReport:
    decoder, posterior = model.decoder, model.posterior
    own = families[0]
    num_samples = num_samples or config.num_samples
    budget = memory_budget_mb(x.device) if config.memory_budget_mb is None else config.memory_budget_mb
    with torch.no_grad():
        guess = posterior.guess(x)  # the encoder's q, or the prior for runs without one
        elbo_amortized = (
            chunked_elbo(decoder, own, x, guess, config.batch_size, ELBO_SAMPLES)
            if posterior.amortized
            else None
        )
    inferred = map_points(lambda x: posterior.infer(decoder, x), x, size=config.batch_size)
    with torch.no_grad():
        if elbo_amortized is not None and torch.equal(inferred, guess):  # an encoder's q, as it is
            elbo_inferred = elbo_amortized  # the same q: one estimate, not two differing by noise
        else:
            elbo_inferred = chunked_elbo(decoder, own, x, inferred, config.batch_size, ELBO_SAMPLES)
    refined, encoder_start_won = {}, None
    for family in families:
        prior = family.prior(x.shape[0], x.device)
        if family is own and config.init == RefineInit.best and posterior.amortized:
            from_encoder = _refine_family(decoder, family, x, guess, config, progress)
            from_prior = _refine_family(decoder, family, x, prior, config, progress)
            refined[family.name], encoder_start_won = _better_start(
                decoder, family, x, from_encoder, from_prior, config
            )
            continue
        start = guess if family is own and config.init != RefineInit.prior else prior
        refined[family.name] = _refine_family(decoder, family, x, start, config, progress)
    started = time.perf_counter()
    with torch.no_grad():
        proposal = _proposal(families, refined, config)  # (N,)

        def estimate(estimator: Estimator) -> Tensor:
            """log p^(x) per point, each with its best q* as proposal, (N,)."""
            log_px = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
            for index, (family, r) in enumerate(zip(families, refined.values(), strict=True)):
                chosen = proposal == index
                if bool(chosen.any()):
                    log_px[chosen] = _log_marginal(
                        decoder,
                        family,
                        x[chosen],
                        r.params[chosen],
                        config,
                        estimator,
                        num_samples,
                        budget,
                        progress,
                    )
            return log_px

        both = (
            {e: estimate(e) for e in (Estimator.iwae, Estimator.ais)}
            if config.estimator == Estimator.best
            else {}
        )
        log_px = both[Estimator.iwae] if both else estimate(config.estimator)
        exact = exact_log_marginal(decoder, x, quadrature=config.quadrature)
        exact, exact_error = (None, None) if exact is None else exact
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    return GapReport(
        family=own.name,
        elbo_amortized=elbo_amortized,
        elbo_inferred=elbo_inferred,
        refined=refined,
        log_px=log_px,
        proposal=proposal,
        log_px_exact=exact,
        log_px_exact_error=exact_error,
        log_px_seconds=time.perf_counter() - started,
        estimator=config.estimator.value,
        num_samples=config.ais.num_chains if config.estimator == Estimator.ais else num_samples,
        proposal_dof=config.proposal_dof if config.estimator != Estimator.ais else None,
        log_px_iwae=both.get(Estimator.iwae),
        log_px_ais=both.get(Estimator.ais),
        encoder_start_won=encoder_start_won,
    )


def _proposal(families: list[Family], refined: dict[str, Refinement], config: EvalConfig) -> Tensor:
    """Per point, the index of the family whose q* proposes log p(x)'s samples: the best L[q*],
    among the Gaussian families when IWAE's proposal is their Student-t (`eval.proposal_dof`)."""
    elbos = torch.stack([r.elbo for r in refined.values()])  # (F, N)
    if config.proposal_dof is not None:
        gaussian = torch.tensor([f.is_gaussian for f in families], device=elbos.device)
        if not bool(gaussian.any()):
            raise ValueError(
                "eval.proposal_dof needs a Gaussian q*: add diagonal or full to eval.families, "
                "or set eval.proposal_dof=null"
            )
        elbos = elbos.masked_fill(~gaussian[:, None], -math.inf)
    return elbos.argmax(0)


def _refine_family(
    decoder: Decoder, family: Family, x: Tensor, start: Tensor, config: EvalConfig, progress: bool
) -> Refinement:
    """q* of one family from `start`, and its ELBO with ELBO_SAMPLES samples."""
    refined = refine(decoder, family, x, start, config.refine, config.batch_size, progress)
    with torch.no_grad():
        elbo = chunked_elbo(decoder, family, x, refined.params, config.batch_size, ELBO_SAMPLES)
    return Refinement(elbo, refined.params, refined.steps, refined.capped, refined.seconds)


def _better_start(
    decoder: Decoder,
    family: Family,
    x: Tensor,
    from_encoder: Refinement,
    from_prior: Refinement,
    config: EvalConfig,
) -> tuple[Refinement, Tensor]:
    """Per point, the q* with the larger L[q*] estimate, and where the encoder's start won, (N,).

    The kept q*'s ELBO is estimated again on fresh samples: the larger of two noisy estimates
    is biased upwards, a fresh estimate of the chosen q is not."""
    won = from_encoder.elbo >= from_prior.elbo  # (N,)
    params = torch.where(won[:, None], from_encoder.params, from_prior.params)  # (N, P)
    with torch.no_grad():
        elbo = chunked_elbo(decoder, family, x, params, config.batch_size, ELBO_SAMPLES)
    kept = Refinement(
        elbo,
        params,
        torch.where(won, from_encoder.steps, from_prior.steps),
        torch.where(won, from_encoder.capped, from_prior.capped),
        from_encoder.seconds + from_prior.seconds,
    )
    return kept, won.to(x.dtype)


def _log_marginal(
    decoder: Decoder,
    family: Family,
    x: Tensor,
    params: Tensor,
    config: EvalConfig,
    estimator: Estimator,
    num_samples: int,
    budget: float,
    progress: bool = False,
) -> Tensor:
    """log p^(x) by `estimator` (IWAE or AIS) with proposal q (params); with `progress`, AIS
    says what it will cost before it starts."""
    if estimator == Estimator.ais:
        ais = config.ais
        return ais_log_marginal(
            decoder,
            family,
            x,
            params,
            num_steps=ais.num_steps,
            num_leapfrog=ais.num_leapfrog,
            num_chains=ais.num_chains,
            pilot_chains=ais.pilot_chains,
            step_size=ais.step_size,
            memory_budget_mb=budget,
            report=tqdm.write if progress else None,
        )
    return iwae_log_marginal(
        decoder, family, x, params, num_samples, memory_budget_mb=budget, tail_dof=config.proposal_dof
    )


def measure_row_gap(
    model: LatentVariableModel, x: Tensor, idx: Tensor, config: EvalConfig, num_samples: int = ELBO_SAMPLES
) -> Tensor:
    """L[q*_i] - L[q_i] per training point, (N,): how far q_i = posterior(x, idx) (a table
    row or the encoder's output) is from the best q of its family, decoder frozen.

    q* is refined from q_i; the difference is estimated with common random numbers
    (`local_fit.window_gain`), so it is far less noisy than two separate ELBO estimates.
    Under torchrun a collective: each rank measures the rows it owns, all get every row.
    """
    shard = distributed.current_shard()
    if shard.world_size > 1:
        mine = shard.owns(idx)
        distributed.decorrelate_rng()
        has_rows = bool(mine.any())  # fewer rows than ranks leaves some rank without one
        gap = _row_gap(model, x[mine], idx[mine], config, num_samples) if has_rows else x.new_zeros(0)
        return distributed.gather_rows(gap, mine.nonzero().squeeze(1), idx.shape[0])
    return _row_gap(model, x, idx, config, num_samples)


def _row_gap(
    model: LatentVariableModel, x: Tensor, idx: Tensor, config: EvalConfig, num_samples: int
) -> Tensor:
    family = model.family
    with torch.no_grad():
        then = model.posterior(x, idx)  # (N, P)
    now = refine(model.decoder, family, x, then, config.refine, config.batch_size).params
    with torch.no_grad():
        return map_points(
            lambda x, now, then: window_gain(model.decoder, family, x, now, then, num_samples),
            x,
            now,
            then,
            size=config.batch_size,
        )
