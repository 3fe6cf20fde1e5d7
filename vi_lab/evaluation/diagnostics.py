"""Posterior diagnostics: how much of the latent space a batch of q's uses, and how much of x
it carries (posterior collapse), for any variational family.

For q's of N points x_1..x_N (a family and params (N, P)), with the prior p = N(0, I):
- active units (Burda, Grosse & Salakhutdinov 2016): dimension d is active when
  Cov_x(E_q[z_d]) > 0.01. E_q[z] is the Gaussian mean where the family has `gaussian`,
  else a Monte Carlo mean of MOMENT_SAMPLES draws; the variance over points of Monte Carlo
  means carries their noise, E_x[Var_q(z_d)] / S, which is subtracted (unbiased).
- KL per dimension: KL(q_d || N(0, 1)) of q's marginal in dimension d, (N, D), averaged over
  points for the report. Where the family has `gaussian` the marginal is N(loc_d, Sigma_dd),
  in closed form; then for the diagonal family the D values sum to KL(q || p) exactly, and
  for any Gaussian q they sum to KL(q || p) - TC(q), TC(q) = KL(q || prod_d q_d) =
  -log det(corr(Sigma)) / 2 >= 0 (p factorizes, so KL(q || p) = sum_d KL(q_d || p_d) + TC(q)).
  A family without a Gaussian form (a flow) gets the KL of the Gaussian with the marginal's
  Monte Carlo mean and variance: a lower bound on the marginal's KL (for a given mean and
  variance the Gaussian has the largest entropy, so the smallest KL to N(0, 1)).
- mutual information I_q(x; z) under the aggregate posterior q(z) = (1/N) sum_j q(z | x_j)
  (Hoffman & Johnson 2016, "ELBO surgery"), by the estimator of He et al. (2019, "Lagging
  inference networks"): E_x[E_q(z|x) log q(z | x)] - E_x E_q(z|x)[log q(z)], here
  with z ~ q(z | x_i) drawn once per point and log q(z | x_i) at the draw (their code uses the
  Gaussian entropy; the two agree in expectation), and log q(z) the log-mean-exp of
  log q(z | x_j) over all N points, j = i included. It is the MI of the empirical
  distribution of the N points, at most log N (gaps.json records log N beside it): an
  estimate near log N is saturated, and I(x; z) may be larger, as for an image VAE on
  validation's 50 points (log 50 = 3.9 nats).
  Needs `log_prob` at any z, which a planar flow lacks: None for such a family.
- marginal KL(q(z) || p(z)) = E_x KL(q(z | x) || p(z)) - I_q(x; z) (Hoffman & Johnson 2016),
  per point: KL_i - MI_i, from the family's KL (closed form, or Monte Carlo for a flow) and
  the MI terms above; None where the MI is, and too large where the MI is saturated.
Each mean of per-point terms comes with its standard error over points; the MI terms share
the aggregate, so theirs is approximate (on the linear-Gaussian tests it is calibrated).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vi_lab.chunking import map_points
from vi_lab.inference.families import Family, sample_mean

ACTIVE_THRESHOLD = 0.01  # Burda et al. (2016): Cov_x(E_q[z_d]) above it makes d active
MOMENT_SAMPLES = 256  # draws behind E_q[z] and Var_q(z) of a family without a Gaussian form
MI_SAMPLES = 1  # draws of z per point behind the MI (He et al. 2019 draw one)
CHUNK_ELEMENTS = 1 << 24  # z values per chunk of work (draws, the N x N table of log q(z_i | x_j))


@dataclass
class Diagnostics:
    """The diagnostics of one batch of q's on N points."""

    mean_variance: Tensor  # (D,) Cov_x(E_q[z_d])
    kl_per_dimension: Tensor  # (N, D) KL of q's marginal in each dimension
    mutual_information: Tensor | None  # (N,) per-point terms whose mean is the MI estimate
    marginal_kl: Tensor | None  # (N,) per-point terms whose mean estimates KL(q(z) || p(z))

    @property
    def active_units(self) -> int:
        return int((self.mean_variance > ACTIVE_THRESHOLD).sum())

    def summary(self) -> dict[str, Any]:
        """JSON values: counts, per-dimension lists, means with their standard errors."""
        result: dict[str, Any] = {
            "active_units": self.active_units,
            "mean_variance": self.mean_variance.tolist(),
            "kl_per_dimension": self.kl_per_dimension.mean(0).tolist(),
        }
        for key in ("mutual_information", "marginal_kl"):
            terms = getattr(self, key)
            result[key] = None if terms is None else terms.mean().item()
            result[f"{key}_se"] = None if terms is None else _standard_error(terms)
        result["log_num_points"] = math.log(self.kl_per_dimension.shape[0])  # the MI estimate's ceiling
        return result

    def per_point(self) -> dict[str, np.ndarray]:
        values = {
            "kl_per_dimension": self.kl_per_dimension,
            "mutual_information": self.mutual_information,
            "marginal_kl": self.marginal_kl,
        }
        return {k: v.detach().cpu().numpy() for k, v in values.items() if v is not None}


def _standard_error(terms: Tensor) -> float:
    return math.nan if terms.shape[0] < 2 else (terms.std() / math.sqrt(terms.shape[0])).item()


def _gaussian(family: Family, params: Tensor) -> tuple[Tensor, Tensor] | None:
    """(loc, scale_tril) of a Gaussian q, None for a family without a Gaussian form."""
    try:
        return family.gaussian(params)
    except NotImplementedError:
        return None


@torch.no_grad()
def marginal_moments(
    family: Family, params: Tensor, num_samples: int = MOMENT_SAMPLES
) -> tuple[Tensor, Tensor, Tensor]:
    """E_q[z_d], Var_q(z_d) (each (N, D)) and the variance of the mean's estimate (N, D): 0 in
    closed form (a Gaussian q), Var_q(z_d) / S for a Monte Carlo mean of S draws."""
    gaussian = _gaussian(family, params)
    if gaussian is not None:
        loc, scale_tril = gaussian
        variance = scale_tril.square().sum(-1)  # diag(L L^T)
        return loc, variance, torch.zeros_like(loc)

    def moments(params: Tensor) -> tuple[Tensor, Tensor]:
        z = family.sample(params, num_samples).z  # (S, n, D)
        return z.mean(0), z.var(0)

    loc, variance = map_points(moments, params, size=_points_per_chunk(num_samples * family.latent_dim))
    return loc, variance, variance / num_samples


def _points_per_chunk(elements_per_point: int) -> int:
    return max(1, CHUNK_ELEMENTS // elements_per_point)


def mean_variance(means: Tensor, noise: Tensor) -> Tensor:
    """Cov_x(E_q[z_d]) per dimension, (D,), from the means of N q's (N, D), less the mean
    variance of their estimates (`noise`, (N, D); 0 for closed-form means)."""
    return means.var(0) - noise.mean(0)


def kl_per_dimension(loc: Tensor, variance: Tensor) -> Tensor:
    """KL(N(loc_d, variance_d) || N(0, 1)) per dimension, (N, D)."""
    return 0.5 * (loc.square() + variance - 1.0 - variance.log())


@torch.no_grad()
def mutual_information_terms(family: Family, params: Tensor, num_samples: int = MI_SAMPLES) -> Tensor | None:
    """Per-point terms log q(z_i | x_i) - log q(z_i), z_i ~ q(z | x_i) (averaged over
    `num_samples` draws), with q(z) = (1/N) sum_j q(z | x_j), (N,): their mean is He et al.'s
    estimate of I_q(x; z). None for a family without `log_prob`."""
    num_points = params.shape[0]
    drawn = family.sample(params, num_samples)  # z (S, N, D)
    flat = drawn.z.reshape(-1, family.latent_dim)  # (S N, D), point i at rows s N + i
    chunk = _points_per_chunk(num_points * family.latent_dim)
    log_aggregate = []
    for start in range(0, flat.shape[0], chunk):
        z = flat[start : start + chunk, None].expand(-1, num_points, -1)  # (C, N, D): z_i against every q_j
        try:
            log_q = family.log_prob(params, z)  # (C, N) log q(z_i | x_j)
        except NotImplementedError:
            return None
        log_aggregate.append(torch.logsumexp(log_q, dim=1) - math.log(num_points))
    log_aggregate = torch.cat(log_aggregate).view(num_samples, num_points)
    return (drawn.log_q - log_aggregate).mean(0)


@torch.no_grad()
def diagnose(family: Family, params: Tensor, num_samples: int = MOMENT_SAMPLES) -> Diagnostics:
    """Active units, KL per dimension, the MI and the marginal KL of the q's `params` (N, P)."""
    loc, variance, noise = marginal_moments(family, params, num_samples)
    mutual_information = mutual_information_terms(family, params)
    marginal_kl = None
    if mutual_information is not None:
        size = _points_per_chunk(num_samples * family.latent_dim)
        kl = map_points(lambda p: sample_mean(family.sample(p, num_samples).kl), params, size=size)
        marginal_kl = kl - mutual_information
    return Diagnostics(
        mean_variance(loc, noise), kl_per_dimension(loc, variance), mutual_information, marginal_kl
    )


def diagnose_posteriors(
    family: Family, encoder: Tensor | None, refined: Tensor, num_samples: int = MOMENT_SAMPLES
) -> dict[str, Diagnostics | None]:
    """{"encoder": the diagnostics of the encoder's q (None without an encoder), "refined": of q*}."""
    return {
        "encoder": None if encoder is None else diagnose(family, encoder, num_samples),
        "refined": diagnose(family, refined, num_samples),
    }


REPORT_KEYS = ("active_units", "kl_per_dimension", "mutual_information", "marginal_kl", "mean_variance")


def report(diagnostics: dict[str, Diagnostics | None]) -> dict[str, dict[str, Any]]:
    """gaps.json's entries: {key: {q: value}} for every key of REPORT_KEYS, each mean's
    standard error as {key: {q_se: ...}}, None for a q that is None; and the MI's ceiling
    log N as {"mutual_information": {"log_num_points": ...}}."""
    summaries = {name: None if d is None else d.summary() for name, d in diagnostics.items()}
    result: dict[str, dict[str, Any]] = {key: {} for key in REPORT_KEYS}
    for name, summary in summaries.items():
        for key in REPORT_KEYS:
            result[key][name] = None if summary is None else summary[key]
            if key in ("mutual_information", "marginal_kl"):
                result[key][f"{name}_se"] = None if summary is None else summary[f"{key}_se"]
        if summary is not None:
            result["mutual_information"]["log_num_points"] = summary["log_num_points"]
    return result


def per_point(diagnostics: dict[str, Diagnostics | None]) -> dict[str, np.ndarray]:
    """points.npz's arrays: `key.q` for every q that is not None."""
    return {
        f"{key}.{name}": value
        for name, d in diagnostics.items()
        if d is not None
        for key, value in d.per_point().items()
    }


def scalars(diagnostics: dict[str, Diagnostics | None]) -> dict[str, float]:
    """Flat scalars for TensorBoard and the run's history: `{key}_{q}` for the active units,
    the MI and the marginal KL where they exist."""
    values = {}
    for name, d in diagnostics.items():
        if d is None:
            continue
        summary = d.summary()
        values[f"active_units_{name}"] = float(summary["active_units"])
        for key in ("mutual_information", "marginal_kl"):
            if summary[key] is not None:
                values[f"{key}_{name}"] = summary[key]
    return values
