"""The training metrics between two log points: stacked per step, checked and reduced at a flush.

Each step only stacks the per-example sums of its logged terms on the device; the
finiteness check and the reductions (and the device synchronization they cost) happen
in `flush`, once per `train.log_every` steps; under torchrun the sums are added over the
ranks there (each rank logs its rows of the global batch). The running sums of the epoch in progress,
and the steps since the last flush, are part of the checkpoint, so a run resumed mid-epoch
reports the whole epoch with the numbers of an uninterrupted run.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from vi_lab import distributed


class NonFiniteStep(ArithmeticError):
    """A step of the window logged a NaN or an infinity; `steps_ago` counts back from the last step."""

    def __init__(self, steps_ago: int) -> None:
        super().__init__(f"non-finite values {steps_ago} steps before the last")
        self.steps_ago = steps_ago


class MetricWindow:
    def __init__(self) -> None:
        self.rows: list[Tensor] = []  # per step: (T,) sums over the batch
        self.count = 0  # examples in the window
        self.names: list[str] = []
        self.epoch_sums: Tensor | None = None  # (T,)
        self.epoch_count = 0

    def add(self, values: dict[str, Tensor], batch_size: int) -> None:
        """One step's per-example values (each (B,)), summed over the batch; no sync.
        `batch_size` is the global batch's, whose sums `flush` reduces over ranks."""
        self.names = list(values)
        self.rows.append(torch.stack([v.detach() for v in values.values()]).sum(1))  # (T,)
        self.count += batch_size

    def flush(self) -> dict[str, float]:
        """Per-example means of the window's terms, added to the epoch's sums; raises
        `NonFiniteStep` (keeping nothing) when a step logged a NaN or an infinity."""
        rows = self.pending()
        if rows is None:
            return {}
        sums = rows.sum(0)  # (T,)
        self.epoch_sums = sums if self.epoch_sums is None else self.epoch_sums + sums
        self.epoch_count += self.count
        means = dict(zip(self.names, (sums / self.count).tolist(), strict=True))
        self.rows, self.count = [], 0
        return means

    def pending(self) -> Tensor | None:
        """The sums of the steps since the last flush over the global batches, (W, T) (None
        when there are none; a collective otherwise); `NonFiniteStep` when one is not finite."""
        if not self.rows:
            return None
        rows = distributed.all_sum(torch.stack(self.rows))  # (W, T)
        finite = torch.isfinite(rows).all(1)  # (W,)
        if not bool(finite.all()):
            raise NonFiniteStep(len(self.rows) - 1 - int((~finite).nonzero()[0]))
        return rows

    def start_epoch(self) -> None:
        self.epoch_sums, self.epoch_count = None, 0

    def epoch_means(self) -> dict[str, float]:
        """Per-example means of the flushed steps of the epoch ({} before the first)."""
        if self.epoch_sums is None or self.epoch_count == 0:
            return {}
        return dict(zip(self.names, (self.epoch_sums / self.epoch_count).tolist(), strict=True))

    def state(self) -> dict[str, Any] | None:
        """The epoch's sums and the steps not yet flushed, for a checkpoint (None: no step yet).

        Keeping the unflushed steps (rather than flushing them early) makes a run stopped
        between log points add the same numbers in the same order once resumed. A collective
        while steps are pending; `NonFiniteStep` when one is not finite, so that nothing a
        non-finite step touched is saved."""
        rows = self.pending()
        if self.epoch_sums is None and rows is None:
            return None
        return {
            "names": self.names,
            "sums": None if self.epoch_sums is None else self.epoch_sums.cpu(),
            "count": self.epoch_count,
            "rows": None if rows is None else rows.cpu(),  # (W, T), summed over the ranks
            "rows_count": self.count,
        }

    def restore(self, state: dict[str, Any] | None, device: torch.device) -> None:
        """The sums of a checkpoint (`state()`); the pending steps go to rank 0, being the
        sums over all ranks already, so that the next flush adds them once."""
        if state is None:
            return
        self.names, self.epoch_count = state["names"], state["count"]
        self.epoch_sums = None if state["sums"] is None else state["sums"].to(device)
        rows = state.get("rows")  # absent from checkpoints written before pending steps were kept
        if rows is not None:
            rows = rows.to(device) if distributed.is_main() else torch.zeros_like(rows, device=device)
            self.rows, self.count = list(rows), state["rows_count"]
