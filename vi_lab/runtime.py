"""Where and how a run executes: the device, compiled hot paths, mixed precision, and the one
place seeds and random streams are set."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch

from vi_lab.config import ConfigError, Precision


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when present, else CPU; an explicit CUDA request without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name} was asked for but CUDA is not available here: use auto or cpu")
    return device


def available_bytes(device_type: str) -> int | None:
    """Memory free for new tensors: MemAvailable (Linux) on the CPU, free memory on a GPU;
    None where it cannot be read."""
    if device_type == "cuda":
        return torch.cuda.mem_get_info()[0] if torch.cuda.is_available() else None
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@functools.cache
def compiled_function(fn: Callable[..., tuple], device: torch.device) -> Callable[..., tuple]:
    """`fn` (pure tensor code returning a tuple of tensors) compiled for a device, once per process.

    torch.compile traces `fn` with its `torch.autograd.grad` call included (Dynamo's
    `trace_autograd_ops`), so forward, backward and the update around them become one graph
    of fused Inductor kernels; a new input shape compiles again (then with dynamic shapes).
    On CUDA the graph is also captured as a CUDA graph (mode `reduce-overhead`): one launch
    per call. A replay reuses the memory of the last one's outputs, so they are cloned.
    """
    cuda = device.type == "cuda"
    graph = torch.compile(fn, mode="reduce-overhead" if cuda else None)

    def run(*args: object) -> tuple:
        with torch._dynamo.config.patch(trace_autograd_ops=True):
            outputs = graph(*args)
        return tuple(t.clone() for t in outputs) if cuda else outputs

    return run


def autocast(precision: Precision, device: torch.device) -> AbstractContextManager:
    """The mixed-precision context of a training step: bf16 autocast on CUDA, else nothing.

    `check_precision` has refused bf16 anywhere but CUDA before a run starts.
    """
    if precision == Precision.bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def check_precision(precision: Precision, device: torch.device) -> None:
    """Raise ConfigError (one line) for bf16 on a device other than CUDA, the only one it is offered for."""
    if precision == Precision.bf16 and device.type != "cuda":
        raise ConfigError(f"runtime.precision: bf16 needs a CUDA device, not {device}: use float32")


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
