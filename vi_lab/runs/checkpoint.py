"""Checkpoints: written atomically, the previous one kept, read with weights_only=True.

A checkpoint is a plain dict of tensors and primitives (state dicts, the resolved
config as a dict, the RNG state and the position in training), so it loads without
unpickling code. A write goes to a temp file (fsync, then rename: POSIX rename is
atomic), with SIGINT/SIGTERM deferred until it is whole (`stopping.signals_deferred`);
the checkpoint it replaces becomes checkpoint.prev.pt. Every file written gets a sidecar,
FILE.sha256, holding the SHA-256 digest of its bytes (hashed as they are written, and itself
written atomically once the file is in place), and reading verifies it: bytes changed on disk
after the write are found, not loaded (a file without a sidecar, from an older version or a
crash between the two renames, is read unverified: the rename made it whole). Reading falls
back to the previous checkpoint, with a warning, when the newest one fails its digest or is
corrupt, truncated or empty. A failed write (disk full, any OSError) raises
`CheckpointWriteError` naming the path and the size it needed; the temp file is removed and
the checkpoints already on disk are untouched. A write first checks that the file system has
room for it.

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

import errno
import hashlib
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
DIGEST_SUFFIX = ".sha256"
REQUIRED_KEYS = ("model", "config", "position")


class CheckpointError(ValueError):
    """No readable checkpoint, or one that cannot be used; the message says which file and why."""


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (disk full, a folder in the way, ...): the message says
    where and why; the checkpoints written before are intact."""


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
            verify_digest(path)
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
    """torch.save through a temp file, fsync and rename; the replaced file (and its digest)
    becomes PREVIOUS; then the digest of the new file is written beside it."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    needed = _payload_bytes(payload)
    try:
        free = shutil.disk_usage(path.parent).free
        if free < needed:
            raise OSError(errno.ENOSPC, f"only {_megabytes(free)} free")
        # os.open honours the umask (mkstemp would make the file 0600, unlike its neighbours)
        with os.fdopen(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666), "wb") as file:
            hashing = _HashingWriter(file)
            try:
                torch.save(payload, hashing)
            except RuntimeError:  # torch's zip writer turns the OSError of a write into this
                if hashing.error is not None:
                    raise hashing.error from None
                raise
            file.flush()
            os.fsync(file.fileno())
        if keep_previous and path.exists():
            previous = path.with_name(PREVIOUS)
            os.replace(path, previous)
            if _digest_path(path).exists():
                os.replace(_digest_path(path), _digest_path(previous))
            else:
                _digest_path(previous).unlink(missing_ok=True)  # an older digest must not stay with it
        os.replace(temp, path)
        _write_digest(path, hashing.digest.hexdigest())
    except OSError as error:
        temp.unlink(missing_ok=True)
        reason = error.strerror or type(error).__name__
        raise CheckpointWriteError(
            f"{path}: the checkpoint could not be written ({reason}; it needs about {_megabytes(needed)}); "
            "the checkpoints written before are intact"
        ) from None
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


class _HashingWriter:
    """The file object torch.save writes to (sequentially): hashes the bytes on their way and
    keeps the OSError of a failed write, which torch reports as a RuntimeError."""

    def __init__(self, file: Any) -> None:
        self.file, self.digest, self.error = file, hashlib.sha256(), None

    def write(self, data: bytes) -> int:
        try:
            written = self.file.write(data)
        except OSError as error:
            self.error = error
            raise
        self.digest.update(data)
        return written

    def flush(self) -> None:
        self.file.flush()


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + DIGEST_SUFFIX)


def _write_digest(path: Path, digest: str) -> None:
    """FILE.sha256 (the hex digest, so that it stays true when the file is renamed) through a
    temp file and rename."""
    target = _digest_path(path)
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(temp, "w") as file:
            file.write(f"{digest}\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def verify_digest(path: Path) -> None:
    """CheckpointError when `path`'s bytes differ from the digest recorded beside it (none: no check)."""
    sidecar = _digest_path(path)
    if not sidecar.is_file():
        return
    recorded = sidecar.read_text().split()[:1]
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    if recorded != [digest.hexdigest()]:
        raise CheckpointError(
            f"its bytes do not match the SHA-256 digest in {sidecar.name} (changed on disk)"
        )


def _payload_bytes(payload: Any) -> int:
    """The bytes of the tensors in a (nested) payload: about the size of its file."""
    if isinstance(payload, torch.Tensor):
        return payload.numel() * payload.element_size()
    if isinstance(payload, dict):
        return sum(_payload_bytes(value) for value in payload.values())
    if isinstance(payload, (list, tuple)):
        return sum(_payload_bytes(value) for value in payload)
    return 0


def _megabytes(num_bytes: int) -> str:
    return f"{num_bytes / 1e6:.1f} MB"


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The checkpoint at `path` (a run folder or its checkpoint.pt), else the previous one.

    Falling back warns (CheckpointFallbackWarning); if neither is readable, CheckpointError
    names both files and what is wrong with each.
    """
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    candidates = [path, path.with_name(PREVIOUS)]
    for candidate in candidates:
        if candidate.exists() and not candidate.is_file():
            raise CheckpointError(f"{candidate} is not a file: move it out of the run folder, then resume")
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
    verify_digest(path)
    state = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(state, dict) or not all(key in state for key in REQUIRED_KEYS):
        raise CheckpointError(f"not a vi_lab checkpoint (needs {', '.join(REQUIRED_KEYS)})")
    return state


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else 'unreadable'}"[:200]
