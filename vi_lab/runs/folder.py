"""Run folders: naming a new one, checking it is free, claiming it, and loading a trained run back.

Every command that works on a finished run (evaluate, sample, anomaly, ...) starts
at `load_run`, so all of them read run folders the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
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
from vi_lab.runs.lock import LOCKFILE, folder_lock
from vi_lab.runtime import resolve_device


def default_run_dir(config: Config, root: str | Path = "runs") -> Path:
    """A readable, sortable name: {dataset}__{kind}__s{seed}__{time}."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{config.data.name.value}__{config.inference.kind.value}__s{config.seed}__{stamp}"


def check_fresh(run_dir: Path) -> None:
    """A new run needs a folder without a run in it (not even the leftovers of a failed start),
    which can be made where it is named: not under a file, not inside another run's folder."""
    if str(run_dir) in ("", "."):
        raise FileExistsError("the run folder must be named (--run-dir runs/NAME): not the current folder")
    for parent in run_dir.parents:
        if parent.exists() and not parent.is_dir():
            raise FileExistsError(f"{run_dir}: {parent} is a file, not a folder: pick another --run-dir")
        if (parent / "config.yaml").is_file() and (parent / FILENAME).is_file():
            raise FileExistsError(f"{run_dir} lies inside the run folder {parent}: pick a folder outside it")
    if run_dir.exists() and not run_dir.is_dir():
        raise FileExistsError(f"{run_dir} is a file, not a folder: pick another --run-dir")
    if (run_dir / FILENAME).exists() or (run_dir / PREVIOUS).exists():
        raise FileExistsError(f"{run_dir} already holds a run: resume it with --resume, or pick another one")
    if run_dir.is_dir() and any(path.name != LOCKFILE for path in run_dir.iterdir()):
        raise FileExistsError(
            f"{run_dir} holds files but no checkpoint (left by a run stopped before its first one): "
            "delete the folder or pick another"
        )


def check_resumable(run_dir: Path) -> None:
    """--resume takes a run folder holding a checkpoint."""
    if run_dir.is_file():
        raise FileNotFoundError(f"--resume {run_dir}: pass the run folder {run_dir.parent}, not a file")
    if not run_dir.is_dir():
        raise FileNotFoundError(f"--resume {run_dir}: no such run folder")


@contextmanager
def claim_run_folder(run_dir: Path, resume: bool) -> Iterator[None]:
    """Check the folder (a run to resume, or free for a new one; a new one is made) and hold
    its lock for the block (`lock.folder_lock`): a second process training it is refused,
    naming the holder. Under torchrun rank 0 holds it for all ranks."""
    if resume:
        check_resumable(run_dir)
    else:
        check_fresh(run_dir)
    if not distributed.is_main():
        yield
        return
    made = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        with folder_lock(run_dir, "being trained"):
            yield
    except BaseException:
        if made and [path.name for path in run_dir.iterdir()] == [LOCKFILE]:  # it failed before writing
            (run_dir / LOCKFILE).unlink()
            run_dir.rmdir()
        raise


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
