"""One markdown table for every benchmark: each row a ratio of ours against its reference.

A benchmark module offers `rows(args) -> list[Row]` (and its own `add_arguments(parser)`);
`benchmarks/run_all.py` collects them under one header naming the machine. Timings are
taken side by side: every measure is warmed up, then the measures run in interleaved
rounds (slow drift of a shared machine hits all of them alike), and a row's ratio is the
median of its per-round ratios, shown with the range over the rounds.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Row:
    what: str
    ours: str  # the measured value, with its unit
    reference: str  # what it is compared with, and its value
    ratio: float | None  # median over rounds; None where there is nothing to compare with
    low: float | None = None  # range of the per-round ratios (None: one round)
    high: float | None = None
    goal: str = ""  # e.g. ">= 1.0", "<= 1.3", or "" where there is none

    def cells(self) -> list[str]:
        if self.ratio is None:
            return [self.what, self.ours, self.reference, "–", self.goal]
        spread = (
            f" ({self.low:.2f}–{self.high:.2f})" if self.low is not None and self.high != self.low else ""
        )
        return [self.what, self.ours, self.reference, f"{self.ratio:.2f}{spread}", self.goal]


def side_by_side(measures: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Each measure once to warm up, then `rounds` interleaved rounds; every value per round."""
    for measure in measures.values():
        measure()
    values: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            values[name].append(measure())
    return values


def ratio_row(
    what: str,
    values: dict[str, list[float]],
    ours: str,
    reference: str,
    unit: str,
    goal: str,
    fmt: str = "{:.1f}",
) -> Row:
    """A row comparing measure `ours` with measure `reference` (any unit, ratio ours/reference)."""
    per_round = [a / b for a, b in zip(values[ours], values[reference], strict=True)]
    return Row(
        what,
        f"{fmt.format(statistics.median(values[ours]))} {unit}",
        f"{reference}: {fmt.format(statistics.median(values[reference]))} {unit}",
        statistics.median(per_round),
        min(per_round),
        max(per_round),
        goal,
    )


def machine() -> str:
    """CPU model (lscpu), GPU name where CUDA is present, torch version and thread count."""
    cpu = platform.processor() or platform.machine()
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return (
        f"{cpu} ({os.cpu_count()} cores){gpu}; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )


def markdown(rows: list[Row]) -> str:
    header = ["what", "ours", "reference", "ratio (range)", "goal"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)
