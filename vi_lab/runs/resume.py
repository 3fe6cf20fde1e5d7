"""What `vi-lab train --resume RUN key=value` may change, and how a change is applied and recorded.

A resumed run must be the same experiment: its model, its data, its inference kind, its
seed and its batch size (a position inside an epoch counts batches) are fixed by the
checkpoint, and asking for another value is an error naming the key. How long and how
fast it trains, what it logs and where it runs may change: those changes take effect
(the learning rate is written into the restored optimizer, whose state would otherwise
bring the old one back), config.yaml is rewritten, and every resume appends a line to
resumes.jsonl in the run folder. The rules are listed in docs/resume.md.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from vi_lab import distributed
from vi_lab.config import Config, ConfigError, flatten, from_dict, save_config, to_dict
from vi_lab.models.model import LatentVariableModel
from vi_lab.runs.checkpoint import CheckpointError, load_checkpoint, load_model_state
from vi_lab.runtime import set_rng_state

# keys, or prefixes ending in "." for whole sections, that a resume may change
MAY_CHANGE = (
    "train.",
    "eval.",
    "inference.num_samples",
    "inference.inner.",
    "inference.refine.",
    "progress",
    "device",
    "runtime.",
    "data.path",
    "data.download",
)
FIXED = ("train.batch_size",)  # inside a section that may change, but fixed
RECORD = "resumes.jsonl"


def may_change(key: str) -> bool:
    """Whether a resume may give the dotted config key `key` a new value."""
    if key in FIXED:
        return False
    return any(key == rule or (rule.endswith(".") and key.startswith(rule)) for rule in MAY_CHANGE)


def check_resume(saved: Config, config: Config, epochs_done: int) -> dict[str, list[Any]]:
    """The changes from `saved` to `config` as {key: [old, new]}; ConfigError for a forbidden one."""
    before, after = flatten(to_dict(saved)), flatten(to_dict(config))
    changes = {key: [before.get(key), after.get(key)] for key in after if before.get(key) != after.get(key)}
    for key, (old, new) in changes.items():
        if not may_change(key):
            raise ConfigError(
                f"{key}: a resumed run keeps its {old!r} (asked for {new!r}); start a new run to change it "
                "(see docs/resume.md for what a resume may change)"
            )
    if config.train.epochs < epochs_done:
        raise ConfigError(
            f"train.epochs: the run has already done {epochs_done} epochs (asked for {config.train.epochs})"
        )
    return changes


def apply_to_optimizer(optimizer: torch.optim.Optimizer, config: Config) -> None:
    """Make the restored optimizer use the (possibly changed) learning rate of `config`."""
    for group in optimizer.param_groups:
        group["lr"] = config.train.lr


def record_resume(run_dir: Path, config: Config, changes: dict[str, list[Any]], step: int) -> None:
    """Rewrite config.yaml and append {time, step, changes} to resumes.jsonl."""
    save_config(config, run_dir / "config.yaml")
    line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "step": step, "changes": changes}
    with open(run_dir / RECORD, "a") as file:
        file.write(json.dumps(line) + "\n")


def restore(
    run_dir: Path, config: Config, model: LatentVariableModel, optimizer: torch.optim.Optimizer, num_rows: int
) -> dict[str, Any]:
    """Load the run's checkpoint into `model`, `optimizer` and the random streams under the
    rules above, record the resume, and return the checkpoint (position, history, ...).

    Under torchrun each rank loads the rows of the table it owns (`num_rows` in all), from a
    checkpoint written by any number of processes. Written by as many, every rank gets its
    own random stream back; by another number, the rows are resharded and the streams start
    afresh from the run's seed and step (the same experiment, other Monte Carlo numbers).
    """
    state = load_checkpoint(run_dir)
    changes = check_resume(from_dict(state["config"]), config, state["position"]["epoch"])
    try:
        shard = distributed.current_shard()
        model_state, rng = load_model_state(run_dir, state, shard, model.table_keys, num_rows)
        model.load_state_dict(model_state)
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as error:
        raise CheckpointError(f"{run_dir}: the checkpoint does not fit the model: {error}") from None
    apply_to_optimizer(optimizer, config)
    if rng is None:
        torch.manual_seed(config.seed * 1_000_003 + state["position"]["step"])
        distributed.decorrelate_rng()
    else:
        set_rng_state(rng)
    if distributed.is_main():
        record_resume(run_dir, config, changes, state["position"]["step"])
    return state
