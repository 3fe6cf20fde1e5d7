"""Exact log p(x) for a 2-D latent, by quadrature on a grid, with a stated error bound.

    log p(x) = log of the integral of p(x | z) N(z; 0, I) over z in R^2,

computed per point with the trapezoidal rule on an (n x n) grid of a window that holds the
integrand's mass, in three steps whose errors add up to the reported bound `error` (nats):

1. Truncation to the box [-R, R]^2 (R = `radius`, raised per point where needed). Outside
   it the integral is at most exp(L_max) P(z outside the box) <= exp(L_max) 4 Phi(-R), with
   L_max an upper bound on log p(x | z) over all z (`decoder.log_prob_bound(x)`: 0 for a
   Bernoulli likelihood of binary pixels, from the floor of the scale for a Gaussian one).
   Where that exceeds `tol` times the integral found, R grows until it does not.
2. The window. A grid of `num_nodes` nodes per axis over the box locates the mass; the
   window shrinks to the bounding box (one node of margin) of the nodes within `threshold`
   nats of the largest value, and zooms again until it stops shrinking by half. The mass of
   the nodes left out, summed on the coarser grid, is added to the bound.
3. Resolution. On the window the grid doubles (2^k + 1 nodes per axis: each grid holds the
   nodes of the one before) until the estimate moves by less than `tol` nats from the grid
   of half the resolution; that change bounds the error of the finer grid (the
   trapezoidal rule on a smooth integrand that vanishes at the window's edges converges
   faster than geometrically, Trefethen & Weideman 2014), and is added to the bound.
The tests check the result against a grid twice as fine and against the closed form of a
linear-Gaussian model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from vi_lab.chunking import bytes_per_pair, map_points
from vi_lab.inference import gaussian
from vi_lab.inference.objectives import Decoder

LOG_4 = math.log(4.0)


@dataclass
class Quadrature:
    log_px: Tensor  # (B,) the estimate
    error: Tensor  # (B,) the bound on |log_px - log p(x)|, nats
    lower: Tensor  # (B, 2) the window's corners
    upper: Tensor  # (B, 2)
    num_nodes: int  # nodes per axis of the final grid


def log_integrand(
    decoder: Decoder, x: Tensor, lower: Tensor, upper: Tensor, num_nodes: int, budget_mb: float
) -> Tensor:
    """log p(x | z) + log N(z; 0, I) on each point's grid of num_nodes^2 nodes spanning
    [lower, upper] (each (B, 2)), shape (B, n, n) (first axis z_1)."""
    t = torch.linspace(0.0, 1.0, num_nodes, dtype=x.dtype, device=x.device)  # (n,)
    axes = lower[:, :, None] + (upper - lower)[:, :, None] * t  # (B, 2, n)
    z1 = axes[:, 0, :, None].expand(-1, -1, num_nodes)
    z2 = axes[:, 1, None, :].expand(-1, num_nodes, -1)
    z = torch.stack([z1, z2], dim=-1).flatten(1, 2).transpose(0, 1)  # (n^2, B, 2)
    step = max(1, int(budget_mb * 2**20) // (bytes_per_pair(decoder, x) * x.shape[0]))
    parts = [
        decoder.log_prob(x, z[s : s + step]) + gaussian.log_standard_normal(z[s : s + step])
        for s in range(0, z.shape[0], step)
    ]
    return torch.cat(parts).transpose(0, 1).view(-1, num_nodes, num_nodes)


def trapezoid(values: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
    """log of the trapezoidal rule for exp(values) (B, n, n) on the grids of [lower, upper], (B,)."""
    n = values.shape[-1]
    edge = torch.zeros(n, dtype=values.dtype, device=values.device)
    edge[0] = edge[-1] = math.log(0.5)
    log_cell = torch.log((upper - lower) / (n - 1)).sum(-1)  # (B,)
    return torch.logsumexp((values + edge[:, None] + edge[None, :]).flatten(1), 1) + log_cell


def _zoom(values: Tensor, lower: Tensor, upper: Tensor, threshold: float) -> tuple[Tensor, Tensor, Tensor]:
    """The bounding box (one node of margin) of each point's nodes within `threshold` of its
    largest value, and the log mass of the nodes outside it (trapezoidal, (B,))."""
    n = values.shape[-1]
    keep = values > values.flatten(1).max(1).values[:, None, None] - threshold  # (B, n, n)
    index = torch.arange(n, device=values.device)
    corners = []
    for axis_keep in (keep.any(2), keep.any(1)):  # (B, n) per axis
        first = torch.where(axis_keep, index, n).min(1).values
        last = torch.where(axis_keep, index, -1).max(1).values
        corners.append(((first - 1).clamp(min=0), (last + 1).clamp(max=n - 1)))
    h = (upper - lower) / (n - 1)  # (B, 2)
    lo = torch.stack([c[0] for c in corners], 1).to(values.dtype)  # (B, 2) node indices
    hi = torch.stack([c[1] for c in corners], 1).to(values.dtype)
    rows, cols = index[None, :, None], index[None, None, :]
    inside = (rows >= lo[:, 0, None, None]) & (rows <= hi[:, 0, None, None])  # (B, n, 1)
    inside = inside & (cols >= lo[:, 1, None, None]) & (cols <= hi[:, 1, None, None])  # (B, n, n)
    left_out = trapezoid(values.masked_fill(inside, -math.inf), lower, upper)
    return lower + lo * h, lower + hi * h, left_out


def _window_and_estimate(
    decoder: Decoder,
    x: Tensor,
    radius: Tensor,
    num_nodes: int,
    max_nodes: int,
    tol: float,
    threshold: float,
    budget_mb: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """Steps 2 and 3 in the box [-radius, radius]^2 (radius (B,)): (log_px, error, lower, upper, nodes)."""
    lower = -radius[:, None].expand(-1, 2).clone()
    upper = -lower
    left_out = torch.full_like(radius, -math.inf)  # log mass left out by the zooms
    for _ in range(8):
        values = log_integrand(decoder, x, lower, upper, num_nodes, budget_mb)
        new_lower, new_upper, dropped = _zoom(values, lower, upper, threshold)
        left_out = torch.logaddexp(left_out, dropped)
        shrunk = ((new_upper - new_lower) < 0.5 * (upper - lower)).any(1)  # (B,)
        lower, upper = new_lower, new_upper
        if not bool(shrunk.any()):
            break
    nodes = num_nodes
    values = log_integrand(decoder, x, lower, upper, nodes, budget_mb)
    estimate = trapezoid(values, lower, upper)
    change = (estimate - trapezoid(values[:, ::2, ::2], lower, upper)).abs()
    while bool((change > tol).any()) and 2 * nodes - 1 <= max_nodes:
        nodes = 2 * nodes - 1
        values = log_integrand(decoder, x, lower, upper, nodes, budget_mb)
        coarse, estimate = estimate, trapezoid(values, lower, upper)
        change = (estimate - coarse).abs()
    error = change + torch.exp(left_out - estimate)  # log(1 + r) <= r
    return estimate, error, lower, upper, nodes


@torch.no_grad()
def grid_log_marginal(
    decoder: Decoder,
    x: Tensor,
    tol: float = 1e-4,
    radius: float = 6.0,
    num_nodes: int = 65,
    max_nodes: int = 1025,
    threshold: float = 40.0,
    memory_budget_mb: float = 64.0,
    batch_size: int = 100,
) -> Quadrature:
    """Per-point log p(x) for a decoder with a 2-D latent and `log_prob_bound` (see module doc)."""
    if getattr(decoder, "latent_dim", None) != 2:
        raise ValueError(
            f"quadrature needs a 2-D latent, the decoder has {getattr(decoder, 'latent_dim', None)}"
        )
    if (num_nodes - 1) & (num_nodes - 2) or num_nodes < 3:
        raise ValueError(f"num_nodes must be 2^k + 1 (e.g. 65), got {num_nodes}")

    def solve(x: Tensor) -> tuple[Tensor, ...]:
        bound = decoder.log_prob_bound(x)  # (b,) L_max
        box = torch.full((x.shape[0],), radius, dtype=x.dtype, device=x.device)
        settings = (num_nodes, max_nodes, tol, threshold, memory_budget_mb)
        estimate, error, lower, upper, nodes = _window_and_estimate(decoder, x, box, *settings)
        # truncation: exp(L_max) 4 Phi(-R) <= tol * p^(x), else widen the box where it fails
        needed = math.log(tol) + estimate - bound - LOG_4  # log Phi(-R) must stay below this
        wider = torch.special.log_ndtr(-box) > needed
        if bool(wider.any()):
            box = torch.where(wider, _radius_for(needed), box)
            again = _window_and_estimate(decoder, x[wider], box[wider], *settings)
            for full, part in zip((estimate, error, lower, upper), again[:4], strict=True):
                full[wider] = part
            nodes = max(nodes, again[4])
        tail = torch.exp(bound + LOG_4 + torch.special.log_ndtr(-box) - estimate)
        return estimate, error + tail, lower, upper, torch.tensor([nodes] * x.shape[0], device=x.device)

    estimate, error, lower, upper, nodes = map_points(solve, x, size=batch_size)
    return Quadrature(estimate, error, lower, upper, int(nodes.max()) if nodes.numel() else num_nodes)


def _radius_for(log_tail: Tensor) -> Tensor:
    """The R with log Phi(-R) = log_tail (bisection on [0, 60]), per point."""
    low, high = torch.zeros_like(log_tail), torch.full_like(log_tail, 60.0)
    for _ in range(60):
        mid = 0.5 * (low + high)
        too_big = torch.special.log_ndtr(-mid) > log_tail
        low, high = torch.where(too_big, mid, low), torch.where(too_big, high, mid)
    return high


def exact_log_marginal(decoder: Decoder, x: Tensor, quadrature: bool = True) -> tuple[Tensor, Tensor] | None:
    """(log p(x), its error bound) per point where the lab knows it: the closed form of the
    linear-Gaussian decoder (error 0), else quadrature for a 2-D latent whose decoder bounds
    its likelihood; None otherwise."""
    if hasattr(decoder, "log_marginal"):
        exact = decoder.log_marginal(x)
        return exact, torch.zeros_like(exact)
    if quadrature and getattr(decoder, "latent_dim", None) == 2 and hasattr(decoder, "log_prob_bound"):
        result = grid_log_marginal(decoder, x)
        return result.log_px, result.error
    return None
