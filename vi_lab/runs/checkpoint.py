"""Checkpoints: written atomically, the previous one kept, read with weights_only=True.

A checkpoint is a plain dict of tensors and primitives (state dicts, the resolved
config as a dict, the RNG state and the position in training), so it loads without
unpickling code. A write goes to a temp file (fsync, then rename: POSIX rename is
atomic), with SIGINT/SIGTERM deferred until it is whole (`stopping.signals_deferred`);
the checkpoint it replaces becomes checkpoint.prev.pt. Reading falls back to that
previous checkpoint, with a warning, when the newest one is corrupt, truncated or empty.

A run under torchrun keeps its per-datapoint table sharded (`vi_lab.distributed.Shard`):
each rank writes its rows, their global indices and its RNG state to
shards/step{step}/rank{r}-of-{W}.pt; then rank 0 writes checkpoint.pt (everything that is
the same on every rank: decoder, encoder, optimizer, position) naming that folder. So
checkpoint.pt and checkpoint.prev.pt each point at a whole set of shards, and a crash
between the two writes leaves the previous pair intact; shard folders that neither names
are removed. `load_model_state` reads the rows a rank owns from any such set, or from a
single-process checkpoint's full table, so a run resumes with any number of processes;
the RNG streams carry over only when the number is unchanged (torch.distributed.checkpoint
reshards too, but only contiguous blocks of DTensors: the table's rows are interleaved).
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from vi_lab import distributed
from vi_lab.distributed import Shard
from vi_lab.runs.stopping import signals_deferred

FILENAME = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
SHARDS = "shards"
REQUIRED_KEYS = ("model", "config", "position")


class CheckpointError(ValueError):
    """No readable checkpoint, or one that cannot be used; the message says which file and why."""


class CheckpointFallbackWarning(UserWarning):
    """The newest checkpoint was unreadable; the previous one was used."""


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> None:
    """Write `payload` to `path`; the file it replaces is kept as checkpoint.prev.pt beside it."""
    path = Path(path)
    with signals_deferred():
        _write(payload, path, keep_previous=True)


def save_sharded(
    payload: dict[str, Any],
    own: dict[str, Any],
    run_dir: Path,
    step: int,
    table_keys: list[str],
    num_rows: int,
) -> None:
    """Collective: every rank writes its shard (its rows of the `table_keys` entries of
    payload["model"], with `own`, e.g. its RNG state), then rank 0 writes checkpoint.pt
    with the rest; `num_rows` is the table's global length."""
    shard = distributed.current_shard()
    folder = Path(SHARDS) / f"step{step:09d}"
    model = payload["model"]
    with signals_deferred():
        (run_dir / folder).mkdir(parents=True, exist_ok=True)
        part = {"rows": shard.rows(num_rows), "table": {key: model[key] for key in table_keys}, **own}
        _write(part, run_dir / folder / f"rank{shard.rank}-of-{shard.world_size}.pt")
        distributed.barrier()  # every shard is whole before checkpoint.pt names them
        if distributed.is_main():
            shared = {key: value for key, value in model.items() if key not in table_keys}
            named = {"folder": str(folder), "world_size": shard.world_size}
            _write({**payload, "model": shared, "shards": named}, run_dir / FILENAME, keep_previous=True)
            _remove_unnamed_shards(run_dir, {str(folder), _shard_folder(run_dir / PREVIOUS)})
        distributed.barrier()  # no rank starts the next save while old shards are removed


def save_run_state(
    payload: dict[str, Any],
    rng: dict[str, Any],
    run_dir: Path,
    step: int,
    table_keys: list[str],
    num_rows: int,
) -> None:
    """A training run's checkpoint.pt: whole in one process; under torchrun in shards, each
    rank's random-number state `rng` going with its shard (`save_sharded`, a collective)."""
    if distributed.world_size() == 1:
        save_checkpoint({**payload, "rng": rng}, run_dir / FILENAME)
    else:
        save_sharded(payload, {"rng": rng}, run_dir, step, table_keys, num_rows)


def load_model_state(
    run_dir: Path, state: dict[str, Any], shard: Shard, table_keys: list[str], num_rows: int
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """This rank's model state dict from a checkpoint, and its RNG state where it has one.

    The table entries hold the rows `shard` owns, read from the checkpoint's full table or
    from its shards, whatever the number of ranks that wrote it. The RNG state comes back
    only when the checkpoint was written by as many ranks (else None: the streams differ).
    """
    model = dict(state["model"])
    named = state.get("shards")
    if named is None:  # a single-process checkpoint: the whole table is in it
        if shard.world_size > 1:
            rows = shard.rows(num_rows, model[table_keys[0]].device) if table_keys else None
            model.update({key: model[key][rows] for key in table_keys})
        return model, state.get("rng") if shard.world_size == 1 else None
    saved_world, folder = named["world_size"], run_dir / named["folder"]
    local_rows = shard.num_rows(num_rows)
    filled = torch.zeros(local_rows, dtype=torch.bool)
    rng = None
    for rank in range(saved_world):
        path = folder / f"rank{rank}-of-{saved_world}.pt"
        try:
            part = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # reads rows lazily
        except Exception as error:
            problem = _first_line(error)
            raise CheckpointError(f"{path}: a shard of the checkpoint is unreadable: {problem}") from None
        mine = shard.owns(part["rows"])
        local = shard.local(part["rows"][mine])
        for key in table_keys:
            if key not in model:
                table = part["table"][key]
                model[key] = table.new_zeros((local_rows, *table.shape[1:]))
            model[key][local] = part["table"][key][mine]
        filled[local] = True
        if saved_world == shard.world_size and rank == shard.rank:
            rng = part.get("rng")
    if table_keys and not bool(filled.all()):
        raise CheckpointError(f"{folder}: the shards miss {int((~filled).sum())} rows of rank {shard.rank}")
    return model, rng


def _shard_folder(path: Path) -> str | None:
    """The shard folder a checkpoint names (None: none, or unreadable, so never loaded)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return None
    return state.get("shards", {}).get("folder")


def _remove_unnamed_shards(run_dir: Path, keep: set[str | None]) -> None:
    for folder in (run_dir / SHARDS).iterdir():
        if str(folder.relative_to(run_dir)) not in keep and re.fullmatch(r"step\d+", folder.name):
            shutil.rmtree(folder, ignore_errors=True)


def _write(payload: dict[str, Any], path: Path, keep_previous: bool = False) -> None:
    """torch.save through a temp file, fsync and rename; the replaced file becomes PREVIOUS."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # os.open honours the umask (mkstemp would make the file 0600, unlike its neighbours)
        with os.fdopen(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666), "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        if keep_previous and path.exists():
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
