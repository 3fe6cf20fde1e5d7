"""Loading a trained run back: its config, its data and its model, on a device.

Every command that works on a finished run (evaluate, sample, anomaly, ...) starts
here, so all of them read run folders the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vi_lab import distributed
from vi_lab.config import Config, from_dict
from vi_lab.data.datasets import Data, load_data
from vi_lab.models.model import LatentVariableModel, build_model
from vi_lab.runs.checkpoint import (
    FILENAME,
    PREVIOUS,
    CheckpointError,
    load_checkpoint,
    load_model_state,
    non_finite_parameters,
)
from vi_lab.runtime import resolve_device


@dataclass
class TrainedRun:
    run_dir: Path
    config: Config
    data: Data
    model: LatentVariableModel
    device: torch.device
    step: int  # decoder steps the checkpoint has taken: where evaluations are logged


def load_run(run_dir: str | Path, device: str | None = None) -> TrainedRun:
    """The run's model in eval mode, on `device` (default: the run's own setting).

    A per-datapoint table holds this rank's rows under torchrun, all rows in one process.
    """
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
    target = distributed.local_device(resolve_device(device or config.device))
    data = load_data(config.data, target)
    shard = distributed.current_shard()
    model = build_model(config, data, shard)
    model.load_state_dict(load_model_state(run_dir, state, shard, model.table_keys, data.num_train)[0])
    model.to(target).eval()
    return TrainedRun(run_dir, config, data, model, target, state["position"]["step"])
