"""Checkpoints: written atomically, the previous one kept, read with weights_only=True.

A checkpoint is a plain dict of tensors and primitives (state dicts, the resolved
config as a dict, the RNG state and the position in training), so it loads without
unpickling code. A write goes to a temp file (fsync, then rename: POSIX rename is
atomic), with SIGINT/SIGTERM deferred until it is whole (`stopping.signals_deferred`);
the checkpoint it replaces becomes checkpoint.prev.pt. Reading falls back to that
previous checkpoint, with a warning, when the newest one is corrupt, truncated or empty.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from vi_lab.runs.stopping import signals_deferred

FILENAME = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
REQUIRED_KEYS = ("model", "config", "position")


class CheckpointError(ValueError):
    """No readable checkpoint, or one that cannot be used; the message says which file and why."""


class CheckpointFallbackWarning(UserWarning):
    """The newest checkpoint was unreadable; the previous one was used."""


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> None:
    """Write `payload` to `path`; the file it replaces is kept as checkpoint.prev.pt beside it."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with signals_deferred():
        try:
            # os.open honours the umask (mkstemp would make the file 0600, unlike its neighbours)
            with os.fdopen(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666), "wb") as file:
                torch.save(payload, file)
                file.flush()
                os.fsync(file.fileno())
            if path.exists():
                os.replace(path, path.with_name(PREVIOUS))
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The checkpoint at `path` (a run folder or its checkpoint.pt), else the previous one.

    Falling back warns (CheckpointFallbackWarning); if neither is readable, CheckpointError
    names both files and what is wrong with each.
    """
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    candidates = [path, path.with_name(PREVIOUS)]
    if not any(candidate.is_file() for candidate in candidates):
        raise FileNotFoundError(f"no checkpoint at {path}: is this a run folder written by `vi-lab train`?")
    problems = []
    for candidate in candidates:
        if not candidate.is_file():
            problems.append(f"{candidate.name}: missing")
            continue
        try:
            state = _read(candidate, device)
        except Exception as error:  # torch.load raises RuntimeError, EOFError, UnpicklingError, ...
            problems.append(f"{candidate.name}: {_first_line(error)}")
            continue
        if problems:
            warnings.warn(
                f"{problems[0]}; using {candidate} (the checkpoint before it)",
                CheckpointFallbackWarning,
                stacklevel=2,
            )
        return state
    raise CheckpointError(f"no readable checkpoint in {path.parent}: {'; '.join(problems)}")


def non_finite_parameters(state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Names of floating-point entries holding NaN or infinity."""
    return [
        name
        for name, tensor in state_dict.items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]


def _read(path: Path, device: torch.device | str) -> dict[str, Any]:
    if path.stat().st_size == 0:
        raise CheckpointError("empty file")
    state = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(state, dict) or not all(key in state for key in REQUIRED_KEYS):
        raise CheckpointError(f"not a vi_lab checkpoint (needs {', '.join(REQUIRED_KEYS)})")
    return state


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else 'unreadable'}"[:200]
