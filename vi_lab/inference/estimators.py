"""Two Monte Carlo estimators of the ELBO's gradient with respect to q's (loc, log_scale).

The ELBO is E_q[f(z)] - KL(q || p(z)) with f(z) = log p(x | z) and q = N(loc, diag s^2),
s = exp(log_scale). The KL gradient is exact and shared (∂/∂loc = loc,
∂/∂log_scale = s^2 - 1), so the estimators differ only in the gradient of E_q[f(z)],
from M samples z_m = loc + s * eps_m:
- reparameterization (Kingma & Welling 2014): mean_m ∇_z f(z_m) for loc, and
  mean_m ∇_z f(z_m) * s * eps_m for log_scale;
- score function, the log-derivative trick (Williams 1992): mean_m (f(z_m) - b_m) ∇ log q(z_m),
  with ∇_loc log q = eps / s and ∇_log_scale log q = eps^2 - 1, and a baseline b_m that is
  0 (`none`) or the mean of f over the other M - 1 samples (`loo`, leave-one-out: independent
  of z_m, so the estimator stays unbiased; Mnih & Rezende 2016, Kool et al. 2019).

Every estimator returns `num_repeats` independent estimates per point: the R x M samples
share the sample dimension of one decoder pass. `vi_lab.uses.gradvar` compares them on a
trained run (`vi-lab gradvar`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vi_lab.chunking import bytes_per_pair
from vi_lab.inference import gaussian
from vi_lab.inference.objectives import Decoder, elbo_and_gradient

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
