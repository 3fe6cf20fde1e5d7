"""Run folders: naming a new one, checking it is free, and loading a trained run back.

Every command that works on a finished run (evaluate, sample, anomaly, ...) starts
at `load_run`, so all of them read run folders the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch

from vi_lab.config import Config, from_dict
from vi_lab.data.datasets import Data, load_data
from vi_lab.models.model import LatentVariableModel, build_model
from vi_lab.runs.checkpoint import FILENAME, PREVIOUS, CheckpointError, load_checkpoint, non_finite_parameters
from vi_lab.runtime import resolve_device


def default_run_dir(config: Config, root: str | Path = "runs") -> Path:
    """A readable, sortable name: {dataset}__{kind}__s{seed}__{time}."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{config.data.name.value}__{config.inference.kind.value}__s{config.seed}__{stamp}"


def check_fresh(run_dir: Path) -> None:
    """A new run needs a folder without a run in it: not even the leftovers of a failed start."""
    if (run_dir / FILENAME).exists() or (run_dir / PREVIOUS).exists():
        raise FileExistsError(f"{run_dir} already holds a run: resume it with --resume, or pick another one")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise FileExistsError(
            f"{run_dir} holds files but no checkpoint (left by a run stopped before its first one): "
            "delete the folder or pick another"
        )


@dataclass
class TrainedRun:
    run_dir: Path
    config: Config
    data: Data
    model: LatentVariableModel
    device: torch.device
    step: int  # decoder steps the checkpoint has taken: where evaluations are logged


def load_run(run_dir: str | Path, device: str | None = None) -> TrainedRun:
    """The run's model in eval mode, on `device` (default: the run's own setting)."""
    run_dir = Path(run_dir)
    if not (run_dir / FILENAME).is_file() and not (run_dir / PREVIOUS).is_file():
        raise FileNotFoundError(f"{run_dir} holds no {FILENAME}: pass a run folder written by `vi-lab train`")
    state = load_checkpoint(run_dir)
    bad = non_finite_parameters(state["model"])
    if bad:
        raise CheckpointError(
            f"{run_dir}: {len(bad)} parameter tensors hold NaN or infinity ({', '.join(bad[:3])}, ...): "
            "the run diverged; train it again with a smaller train.lr"
        )
    config = from_dict(state["config"])
    target = resolve_device(device or config.device)
    data = load_data(config.data, target)
    model = build_model(config, data)
    model.load_state_dict(state["model"])
    model.to(target).eval()
    return TrainedRun(run_dir, config, data, model, target, state["position"]["step"])
