"""TensorBoard output: image grids, the hparams record, and atomic JSON files.

Tags are namespaced as in CleanRL: `train/...`, `valid/...`, `charts/...`,
`posterior/...`, `eval/...`. The hparams record is written into the run's own event
file (not a sub-run), so TensorBoard's HParams tab pairs it with the run's scalars.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams


def image_grid(x: Tensor, image_shape: tuple[int, int, int], num_rows: int | None = None) -> Tensor:
    """(N, P) pixels in [0, 1] -> one (C, H', W') grid image, 2-pixel borders."""
    channels, height, width = image_shape
    num = x.shape[0]
    rows = num_rows or math.ceil(math.sqrt(num))
    cols = math.ceil(num / rows)
    pad = 2
    grid = torch.ones(channels, rows * (height + pad) + pad, cols * (width + pad) + pad)
    images = x.detach().float().clamp(0, 1).cpu().view(num, channels, height, width)
    for i in range(num):
        top, left = pad + (i // cols) * (height + pad), pad + (i % cols) * (width + pad)
        grid[:, top : top + height, left : left + width] = images[i]
    return grid


class NullWriter:
    """The SummaryWriter of ranks other than 0 under torchrun: every call does nothing, so one
    process writes the run's event file."""

    def __getattr__(self, name: str) -> Any:
        return _ignore


def _ignore(*args: Any, **kwargs: Any) -> None:
    return None


def write_hparams(writer: SummaryWriter, params: dict[str, Any], metric_names: list[str]) -> None:
    """Declare the run's hyperparameters and which scalar tags are its metrics."""
    clean = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in params.items()}
    experiment, start, end = hparams(clean, dict.fromkeys(metric_names, 0.0))
    for summary in (experiment, start, end):
        writer.file_writer.add_summary(summary)


def write_json(data: dict[str, Any], path: str | Path) -> None:
    """Write JSON through a temp file and a rename, so a reader never sees half a file."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(data, indent=2, allow_nan=True) + "\n")
    os.replace(temp, path)
