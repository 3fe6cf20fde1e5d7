"""Work over many points in pieces: the memory rule that sizes a piece, and the one helper
that maps a per-point computation over consecutive chunks of points.

Every estimator here is independent per point (refinement, the ELBO, IWAE, AIS), so
chunking over points changes memory, never the answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

from vi_lab.progress import progress_bar

Result = TypeVar("Result", Tensor, tuple[Tensor, ...])


def map_points(
    fn: Callable[..., Result], *tensors: Tensor, size: int, progress: bool = False, desc: str = ""
) -> Result:
    """fn applied to consecutive chunks of `size` points of `tensors` (all indexed by point
    along their first dimension), its results concatenated along the first dimension.

    fn returns a tensor or a tuple of tensors, each with one row per point of its chunk.
    """
    num_points = tensors[0].shape[0]
    if any(t.shape[0] != num_points for t in tensors):
        raise ValueError(f"map_points: first dimensions differ: {[t.shape[0] for t in tensors]}")
    if num_points == 0:
        return fn(*tensors)
    starts = progress_bar(range(0, num_points, size), desc=desc, enabled=progress, leave=False)
    parts = [fn(*(t[start : start + size] for t in tensors)) for start in starts]
    if isinstance(parts[0], Tensor):
        return torch.cat(parts)
    return tuple(torch.cat(column) for column in zip(*parts, strict=True))


def memory_budget_mb(device: torch.device) -> float:
    """Default size of one chunk of estimator work: 64 MB on a CPU (see docs/performance.md),
    half the free memory on a GPU (large chunks keep it busy)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return 0.5 * free / 2**20
    return 64.0


def bytes_per_pair(decoder: object, x: torch.Tensor, keep_graph: bool = False) -> int:
    """Conservative live bytes for one (sample, point) pair in a decoder evaluation.

    The width of a layer is the largest dimension of a parameter with >= 2 dims (for an
    MLP: its in/out features); the data dimension P counts as a layer. Without autograd
    only one layer is live at a time, so the rule is 5 tensors as wide as the widest
    layer; with a graph kept for autograd every layer's activations stay live, so it is
    5 tensors as wide as all layers together (docs/performance.md says why 5). Convolutional
    decoders are underestimated.
    """
    params = decoder.parameters() if hasattr(decoder, "parameters") else []
    widths = [x.shape[-1], *(max(p.shape) for p in params if p.dim() >= 2)]
    width = sum(widths) if keep_graph else max(widths)
    return 5 * width * x.element_size()
