"""Several processes, one run: the process group, who owns which rows, and the reductions.

Under `torchrun` (one process per GPU, or several on a CPU) every process runs the same
program; in a single process everything here is a no-op, so one code path serves both.
This is the only module that imports `torch.distributed`.

- `init()` joins the process group that torchrun describes in its environment variables
  (RANK, WORLD_SIZE, MASTER_ADDR, ...), gloo for CPU tensors and NCCL for CUDA ones.
- `Shard` is the fixed set of rows a rank owns for the whole run: row i belongs to rank
  i mod W. A minibatch of the single-process run is split by that rule, so the global batch
  of every step is the one a single process would draw, and each rank keeps only its rows
  of the per-datapoint table (Hoffman et al. 2013's local parameters), N / W of them.
- `wrap` puts a model under DistributedDataParallel (Li et al. 2020, "PyTorch Distributed:
  Experiences on Accelerating Data Parallel Training"), which all-reduces gradients
  during the backward pass; the rank-local table is left out of its buffer broadcasts.
- `all_sum`, `all_max` and `gather_rows` reduce metrics and gather per-point results.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from vi_lab.config import ConfigError


def init() -> bool:
    """Join torchrun's process group when launched by it (WORLD_SIZE > 1) and not in it yet;
    returns whether it did (the caller then `close`s it)."""
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return False
    # one group for both kinds of tensors: gloo moves CPU tensors, NCCL CUDA ones
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, timeout=timedelta(minutes=30))
    return True


def close() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """The rank that writes the run folder's shared files (rank 0)."""
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def local_device(device: torch.device) -> torch.device:
    """Each process of a node on its own GPU (LOCAL_RANK), when the device is CUDA without an index."""
    if device.type != "cuda" or device.index is not None or world_size() == 1:
        return device
    local_rank, count = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
    if local_rank >= count:
        raise ConfigError(
            f"device: process {local_rank} of this machine has no GPU of its own ({count} here): "
            "run at most that many processes per machine (--nproc_per_node), or device=cpu"
        )
    device = torch.device("cuda", local_rank)
    torch.cuda.set_device(device)
    return device


@dataclass(frozen=True)
class Shard:
    """The rows of an N-row table that one rank owns: i with i mod world_size == rank."""

    rank: int = 0
    world_size: int = 1

    def owns(self, idx: Tensor) -> Tensor:
        return idx % self.world_size == self.rank  # (B,) bool

    def local(self, idx: Tensor) -> Tensor:
        """Positions of owned global rows idx in this rank's table."""
        return idx // self.world_size if self.world_size > 1 else idx

    def rows(self, num_rows: int, device: torch.device | str = "cpu") -> Tensor:
        """The global indices of this rank's rows, in the order of its table."""
        return torch.arange(self.rank, num_rows, self.world_size, device=device)

    def num_rows(self, num_rows: int) -> int:
        return len(range(self.rank, num_rows, self.world_size))

    def select(self, x: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        """This rank's part (x[mask], idx[mask]) of a global batch; the whole batch in one process."""
        if self.world_size == 1:
            return x, idx
        mask = self.owns(idx)
        return x[mask], idx[mask]


WHOLE = Shard()  # every row: a single process


def current_shard() -> Shard:
    return Shard(rank(), world_size())


def decorrelate_rng() -> None:
    """Give each rank its own torch stream, drawn from the current one (the same on every rank).

    Ranks seeded alike would push the same Monte Carlo draws through different points; a
    seed taken from the shared stream plus the rank keeps runs reproducible for a given
    world size. No-op in a single process, whose stream is left untouched.
    """
    if world_size() > 1:
        seed = int(torch.randint(2**62, ()))
        torch.manual_seed(seed + rank())


def wrap(model: nn.Module, rank_local: list[str]) -> nn.Module:
    """`model` under DistributedDataParallel; itself in a single process.

    `rank_local` names buffers that differ between ranks by design (the table's rows): they
    are never broadcast. Gradients are averaged over ranks, so a loss that sums a rank's
    examples and divides by the global batch size over W gives the single-process gradient.
    """
    if world_size() == 1:
        return model
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, rank_local)
    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def all_sum(tensor: Tensor) -> Tensor:
    """The elementwise sum over ranks (a new tensor); `tensor` itself in a single process."""
    if world_size() == 1:
        return tensor
    total = tensor.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def all_max(value: float) -> float:
    """The largest `value` over ranks (e.g. the wall time of a sharded job)."""
    if world_size() == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64)  # gloo's part of the group
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor.item())


def gather_rows(values: Tensor, rows: Tensor, num_rows: int) -> Tensor:
    """The (num_rows, ...) tensor whose row rows[j] is values[j] of the rank that holds it.

    Every rank passes its own rows of one `Shard` rule; each gets the whole tensor back.
    In a single process `values` must already be all rows in order, and is returned.
    """
    if world_size() == 1:
        return values
    width = -(-num_rows // world_size())  # the most rows any rank holds
    dtype = values.dtype
    values = values.to(torch.uint8) if dtype == torch.bool else values  # gloo has no bool
    padded = values.new_zeros((width, *values.shape[1:]))
    padded[: values.shape[0]] = values
    where = torch.full((width,), -1, dtype=torch.long, device=values.device)
    where[: rows.shape[0]] = rows
    all_values = [torch.empty_like(padded) for _ in range(world_size())]
    all_rows = [torch.empty_like(where) for _ in range(world_size())]
    dist.all_gather(all_values, padded)
    dist.all_gather(all_rows, where)
    stacked_rows = torch.cat(all_rows)  # (W * width,)
    held = stacked_rows >= 0
    out = values.new_empty((num_rows, *values.shape[1:]))
    out[stacked_rows[held]] = torch.cat(all_values)[held]
    return out.to(dtype)
