"""The training metrics between two log points: stacked per step, checked and reduced at a flush.

Each step only stacks the per-example sums of its logged terms on the device; the
finiteness check and the reductions (and the device synchronization they cost) happen
in `flush`, once per `train.log_every` steps. The running sums of the epoch in progress
are part of the checkpoint, so a run resumed mid-epoch still reports the whole epoch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


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
        """One step's per-example values (each (B,)), summed over the batch; no sync."""
        self.names = list(values)
        self.rows.append(torch.stack([v.detach() for v in values.values()]).sum(1))  # (T,)
        self.count += batch_size

    def flush(self) -> dict[str, float]:
        """Per-example means of the window's terms, added to the epoch's sums; raises
        `NonFiniteStep` (keeping nothing) when a step logged a NaN or an infinity."""
        if not self.rows:
            return {}
        rows = torch.stack(self.rows)  # (W, T)
        finite = torch.isfinite(rows).all(1)  # (W,)
        if not bool(finite.all()):
            raise NonFiniteStep(len(self.rows) - 1 - int((~finite).nonzero()[0]))
        sums = rows.sum(0)  # (T,)
        self.epoch_sums = sums if self.epoch_sums is None else self.epoch_sums + sums
        self.epoch_count += self.count
        means = dict(zip(self.names, (sums / self.count).tolist(), strict=True))
        self.rows, self.count = [], 0
        return means

    def start_epoch(self) -> None:
        self.epoch_sums, self.epoch_count = None, 0

    def epoch_means(self) -> dict[str, float]:
        """Per-example means of the flushed steps of the epoch ({} before the first)."""
        if self.epoch_sums is None or self.epoch_count == 0:
            return {}
        return dict(zip(self.names, (self.epoch_sums / self.epoch_count).tolist(), strict=True))

    def state(self) -> dict[str, Any] | None:
        """The epoch's sums for a checkpoint (None when no step was flushed)."""
        if self.epoch_sums is None:
            return None
        return {"names": self.names, "sums": self.epoch_sums.cpu(), "count": self.epoch_count}

    def restore(self, state: dict[str, Any] | None, device: torch.device) -> None:
        if state is not None:
            self.names, self.epoch_count = state["names"], state["count"]
            self.epoch_sums = state["sums"].to(device)
