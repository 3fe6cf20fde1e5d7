"""Checkpoints: written atomically (temp file, fsync, rename), read with weights_only=True.

A checkpoint is a plain dict of tensors and primitives (state dicts, the resolved
config as a dict, the RNG state and the position in training), so it loads without
unpickling code. A crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

FILENAME = "checkpoint.pt"


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: is this a run folder written by `vi-lab train`?")
    return torch.load(path, map_location=device, weights_only=True)
