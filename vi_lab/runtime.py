"""Where and how a run executes: the device, the memory rule for chunked work, and the one place
seeds are set."""

from __future__ import annotations

import random

import numpy as np
import torch

from vi_lab.config import ConfigError


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when present, else CPU; an explicit CUDA request without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name} was asked for but CUDA is not available here: use auto or cpu")
    return device


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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_state() -> dict[str, torch.Tensor | list[torch.Tensor]]:
    state: dict[str, torch.Tensor | list[torch.Tensor]] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, torch.Tensor | list[torch.Tensor]]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
