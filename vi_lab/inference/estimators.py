"""Two Monte Carlo estimators of the ELBO's gradient with respect to a q's params.

The ELBO is E_q[f(z)] - KL(q || p(z)) with f(z) = log p(x | z). The KL gradient is exact
and shared (the families with a closed-form density also have a closed-form KL), so the
estimators differ only in the gradient of E_q[f(z)], from M samples z_m ~ q:
- reparameterization (Kingma & Welling 2014): mean_m ∇_params f(T(eps_m; params)), with
  z = T(eps; params) the family's map of standard-normal noise (`Family.elbo_and_gradient`);
- score function, the log-derivative trick (Williams 1992): mean_m (f(z_m) - b_m)
  ∇_params log q(z_m), which needs the family's density at a given z (`Family.log_prob`),
  and a baseline b_m that is 0 (`none`) or the mean of f over the other M - 1 samples
  (`loo`, leave-one-out: independent of z_m, so the estimator stays unbiased; Mnih &
  Rezende 2016, Kool et al. 2019). For the diagonal Gaussian ∇_loc log q = eps / s and
  ∇_log_scale log q = eps^2 - 1, which autograd computes here.

Every estimator returns `num_repeats` independent estimates per point, (R, B, P): the R
copies of the batch share one decoder pass. `vi_lab.uses.gradvar` compares them on a
trained run (`vi-lab gradvar`), block by block of the family's params (`Family.groups`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vi_lab.chunking import bytes_per_pair
from vi_lab.inference.families import Family, sample_mean
from vi_lab.inference.objectives import Decoder, elbo_and_gradient

BASELINES = ("none", "loo")
ESTIMATORS = ("reparameterization", "score_function", "score_function_loo")


def reparameterization_gradient(
    decoder: Decoder, family: Family, x: Tensor, params: Tensor, num_samples: int = 1, num_repeats: int = 1
) -> Tensor:
    """R independent reparameterization estimates of ∇ ELBO per point, (R, B, P): the inner
    loop's gradient on R copies of the batch."""
    copies = [t.detach().repeat(num_repeats, 1) for t in (x, params)]  # (R B, .) each
    grad = elbo_and_gradient(decoder, family, *copies, num_samples).grad
    return grad.view(num_repeats, *params.shape)


def score_function_gradient(
    decoder: Decoder,
    family: Family,
    x: Tensor,
    params: Tensor,
    num_samples: int = 1,
    num_repeats: int = 1,
    baseline: str = "none",
) -> Tensor:
    """R independent score-function estimates of ∇ ELBO per point, (R, B, P)."""
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {', '.join(BASELINES)}, got {baseline!r}")
    if baseline == "loo" and num_samples < 2:
        raise ValueError("the leave-one-out baseline needs num_samples >= 2")
    copies = params.detach().repeat(num_repeats, 1)  # (R B, P)
    eps = torch.randn(
        (num_samples, copies.shape[0], family.latent_dim), dtype=params.dtype, device=params.device
    )
    with torch.no_grad():
        z = family.draw(copies, eps).z  # (M, R B, D)
        f = decoder.log_prob(x.repeat(num_repeats, 1), z)  # (M, R B)
    if baseline == "loo":
        f = f - (f.sum(0, keepdim=True) - f) / (num_samples - 1)
    with torch.enable_grad():
        copies.requires_grad_(True)
        log_q = family.log_prob(copies, z)  # (M, R B), z held fixed
        kl = sample_mean(family.draw(copies, eps).kl)  # (R B,) in closed form for families with log_prob
        (grad,) = torch.autograd.grad(((f * log_q).mean(0) - kl).sum(), copies)
    return grad.view(num_repeats, *params.shape)


def estimate(
    estimator: str,
    decoder: Decoder,
    family: Family,
    x: Tensor,
    params: Tensor,
    num_samples: int,
    num_repeats: int,
    memory_budget_mb: float = 512.0,
) -> dict[str, Tensor]:
    """`num_repeats` estimates by the named estimator, in chunks of repeats that fit the budget,
    split into the family's blocks: {group: (R, B, size)}."""
    pairs_per_repeat = num_samples * x.shape[0]
    max_pairs = int(memory_budget_mb * 2**20) // bytes_per_pair(decoder, x, keep_graph=True)
    chunk = max(1, max_pairs // pairs_per_repeat)
    parts = []
    for start in range(0, num_repeats, chunk):
        repeats = min(chunk, num_repeats - start)
        if estimator == "reparameterization":
            parts.append(reparameterization_gradient(decoder, family, x, params, num_samples, repeats))
        else:
            baseline = "loo" if estimator == "score_function_loo" else "none"
            parts.append(score_function_gradient(decoder, family, x, params, num_samples, repeats, baseline))
    grads = torch.cat(parts)
    return {group: grads[..., block] for group, block in family.groups.items()}


def exact_gradient(decoder: Decoder, family: Family, x: Tensor, params: Tensor) -> dict[str, Tensor] | None:
    """∇ ELBO per point from a closed-form ELBO (`exact_elbo`, the linear-Gaussian decoder), by
    block of the family's params; None where there is none."""
    exact_elbo = getattr(decoder, "exact_elbo", None)
    if exact_elbo is None:
        return None
    with torch.enable_grad():
        params = params.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(exact_elbo(x, family, params).sum(), params)
    return {group: grad[..., block] for group, block in family.groups.items()}


def summarize(grads: Tensor, exact: Tensor | None = None) -> dict[str, float]:
    """Statistics of R estimates (R, B, K) of one block of params, over its B x K coordinates.

    variance: the mean per-coordinate variance across repeats; snr: the mean over coordinates
    of |mean| / std; with an exact gradient, max_abs_z: the largest |mean - exact| in standard
    errors of the mean (unbiased estimators stay within a few).
    """
    mean, std = grads.mean(0), grads.std(0)  # (B, K) each
    stats = {"variance": std.square().mean().item(), "snr": (mean.abs() / std).mean().item()}
    if exact is not None:
        stats["max_abs_z"] = ((mean - exact).abs() / (std / math.sqrt(grads.shape[0]))).max().item()
    return stats
