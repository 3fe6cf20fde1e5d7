"""Evaluation that scales: refinement and IWAE-5000 time and peak memory as the points grow.

Model: the Cremer et al. (2018) decoder (z=50, MLP 200-200, Bernoulli), untrained weights
(the cost per step does not depend on them; the number of refinement steps does, so the
refinement figures are those of this decoder). Sizes are measured in the order N, 2N, N
(the two N runs averaged), once each:
- refinement (`eval.refine`, chunks of `eval.batch_size` points): seconds per point at 2N
  against N (linear: 1.0), and its time against the cost of the steps its rows took
  (every row paying only its own steps, at the per-row cost of a full chunk): how little
  the rows that stopped cost (the working set is compacted once most rows are done);
- IWAE with the refined q as proposal: seconds per point at 2N against N, and its peak
  memory against the memory budget;
- both extrapolated linearly to the 10,000 test points (labelled as such).
Peak memory is the rise above the level before the call: on CUDA from torch's allocator
statistics, on CPU (Linux) from the kernel's peak resident set size, VmHWM, reset to the
current size before the call (/proc/self/clear_refs) and read after it. Memory that earlier
work freed but glibc kept would hide a call's peak (the call reuses it without a rise), so
the heap's free pages are returned first (malloc_trim), and every allocation over 64 KB is
served by mmap (freed tensors leave the resident set at once).

Run: python -m benchmarks.evaluation [--points N] [--samples K] [--budget-mb MB] [--all-points]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from benchmarks.table import Row, machine, markdown
from benchmarks.throughput import inner_step_seconds
from vi_lab.chunking import memory_budget_mb
from vi_lab.config import Config, load_config
from vi_lab.data.datasets import load_data
from vi_lab.evaluation.iwae import iwae_log_marginal
from vi_lab.inference.families import Diagonal
from vi_lab.inference.refine import Refined, refine
from vi_lab.models.decoders import NeuralDecoder, build_decoder
from vi_lab.runtime import resolve_device

ROOT = Path(__file__).parents[1]
TEST_POINTS = 10_000


def _status_bytes(field: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> tuple[object, float, float]:
    """(result, seconds, peak MB above the starting level) of one call."""
    gc.collect()  # what earlier work left in reference cycles is freed before the base is read
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        started = time.perf_counter()
        result = fn()
        torch.cuda.synchronize(device)
        return result, time.perf_counter() - started, (torch.cuda.max_memory_allocated(device) - base) / 2**20
    _glibc("malloc_trim", 0)  # free heap pages leave the resident set, else a call reusing them shows no rise
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # the kernel's peak resident set (VmHWM) starts again from VmRSS
    base = _status_bytes("VmRSS")
    started = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - started
    return result, seconds, max(_status_bytes("VmHWM") - base, 0) / 2**20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("evaluation")
    group.add_argument("--points", type=int, default=200, help="N: sizes N and 2N are measured")
    group.add_argument("--samples", type=int, default=5000, help="K of IWAE")
    group.add_argument(
        "--budget-mb", type=float, default=None, help="IWAE memory budget (default: the device's)"
    )
    group.add_argument("--batch-size", type=int, default=None, help="points refined together (default: N)")
    group.add_argument(
        "--all-points",
        action="store_true",
        help="instead: refinement + IWAE once on the whole test split (chunks of eval.batch_size)",
    )


@dataclass
class Cost:
    """What refinement and then IWAE cost on one set of points."""

    num_points: int
    refine_seconds: float
    point_steps: int  # steps taken, summed over the points
    refine_mb: float  # peak rise
    iwae_seconds: float
    iwae_mb: float


def measure(
    decoder: NeuralDecoder, x: Tensor, config: Config, batch_size: int, samples: int, budget: float
) -> Cost:
    """Refine q from the prior on x, then IWAE with the refined q as proposal."""
    device = x.device
    family = Diagonal(decoder.latent_dim)
    start = family.prior(x.shape[0], device)
    refined, _, refine_mb = peak_memory_mb(
        lambda: refine(decoder, family, x, start, config.eval.refine, batch_size), device
    )
    assert isinstance(refined, Refined)
    _, iwae_seconds, iwae_mb = peak_memory_mb(
        lambda: iwae_log_marginal(decoder, family, x, refined.params, samples, memory_budget_mb=budget),
        device,
    )
    return Cost(x.shape[0], refined.seconds, int(refined.steps.sum()), refine_mb, iwae_seconds, iwae_mb)


def whole_split_row(
    decoder: NeuralDecoder, x: Tensor, config: Config, args: argparse.Namespace, budget: float
) -> Row:
    """Refinement + IWAE measured once on every test point, in chunks of `eval.batch_size`."""
    batch_size = args.batch_size or config.eval.batch_size
    cost = measure(decoder, x, config, batch_size, args.samples, budget)
    return Row(
        f"refinement + IWAE K={args.samples}, all {cost.num_points} test points (chunks of {batch_size})",
        f"{(cost.refine_seconds + cost.iwae_seconds) / 60:.1f} min ({cost.refine_seconds / 60:.1f} + "
        f"{cost.iwae_seconds / 60:.1f}; refinement {cost.point_steps} point-steps, "
        f"{cost.refine_seconds / cost.point_steps * 1e3:.3f} ms each), "
        f"peak +{cost.refine_mb:.0f} MB / +{cost.iwae_mb:.0f} MB",
        f"IWAE budget {budget:.0f} MB",
        cost.iwae_mb / budget,
        goal="<= 1",
    )


def return_freed_memory() -> None:
    """glibc: serve every allocation over 64 KB by mmap (mallopt M_MMAP_THRESHOLD, which also
    stops the threshold from growing), so freed tensors leave the resident set and each
    call's peak is its own, not hidden by memory an earlier call left in the heap."""
    _glibc("mallopt", -3, 1 << 16)  # -3: M_MMAP_THRESHOLD


def _glibc(function: str, *args: int) -> None:
    """Call a glibc malloc tuning function; a no-op where the C library is not glibc."""
    with contextlib.suppress(OSError, AttributeError):
        getattr(ctypes.CDLL("libc.so.6"), function)(*args)


def rows(args: argparse.Namespace) -> list[Row]:
    device = resolve_device(args.device)
    if device.type == "cpu":
        return_freed_memory()
    config = load_config(ROOT / "configs" / "amortized.yaml")
    n1, n2 = args.points, 2 * args.points
    x_all = load_data(config.data, device).x["test"][:n2]
    torch.manual_seed(0)
    decoder = build_decoder(config.model, 784, (1, 28, 28)).to(device).requires_grad_(False)
    budget = memory_budget_mb(device) if args.budget_mb is None else args.budget_mb
    batch_size = args.batch_size or args.points
    if args.all_points:
        return [whole_split_row(decoder, load_data(config.data, device).x["test"], config, args, budget)]

    # N, 2N, N: the two N runs bracket the 2N one in time (drift, first-call costs).
    first, big, last = (
        measure(decoder, x_all[:n], config, batch_size, args.samples, budget) for n in (n1, n2, n1)
    )
    small = Cost(
        n1,
        (first.refine_seconds + last.refine_seconds) / 2,
        (first.point_steps + last.point_steps) // 2,
        max(first.refine_mb, last.refine_mb),
        (first.iwae_seconds + last.iwae_seconds) / 2,
        max(first.iwae_mb, last.iwae_mb),
    )
    # What the rows' own steps cost at the per-row price of a full chunk (a fixed-length fit).
    row_step = (
        statistics.median(
            inner_step_seconds(decoder, x_all[:batch_size], config.eval.refine.num_samples, 10)
            for _ in range(3)
        )
        / batch_size
    )

    def refinement(cost: Cost) -> str:
        return (
            f"{cost.refine_seconds / cost.point_steps * 1e3:.3f} ms "
            f"({cost.refine_seconds / cost.num_points:.3f} s/point), peak +{cost.refine_mb:.0f} MB"
        )

    per_point = (big.refine_seconds + big.iwae_seconds) / n2
    return [
        Row(
            f"refinement, ms/point-step at {n2} vs {n1} points (chunks of {batch_size})",
            refinement(big),
            refinement(small),
            (big.refine_seconds / big.point_steps) / (small.refine_seconds / small.point_steps),
            goal="≈ 1 (linear)",
        ),
        Row(
            f"refinement vs its rows' own steps ({n2} points)",
            f"{big.refine_seconds:.1f} s",
            f"{big.point_steps} point-steps x {row_step * 1e3:.3f} ms = {big.point_steps * row_step:.1f} s",
            big.refine_seconds / (big.point_steps * row_step),
            goal="<= 1.3",
        ),
        Row(
            f"IWAE K={args.samples}, s/point at {n2} vs {n1} points",
            f"{big.iwae_seconds / n2:.3f} s/point, peak +{big.iwae_mb:.0f} MB",
            f"{small.iwae_seconds / n1:.3f} s/point, peak +{small.iwae_mb:.0f} MB",
            (big.iwae_seconds / n2) / (small.iwae_seconds / n1),
            goal="≈ 1 (linear)",
        ),
        Row(
            f"IWAE K={args.samples} peak memory vs budget ({n2} points)",
            f"+{big.iwae_mb:.0f} MB",
            f"budget {budget:.0f} MB",
            big.iwae_mb / budget,
            goal="<= 1",
        ),
        Row(
            f"refinement + IWAE K={args.samples} on {TEST_POINTS} points, EXTRAPOLATED from {n2}",
            f"{per_point * TEST_POINTS / 60:.0f} min ({big.refine_seconds / n2 * TEST_POINTS / 60:.0f} "
            f"+ {big.iwae_seconds / n2 * TEST_POINTS / 60:.0f})",
            "–",
            None,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    add_arguments(parser)
    args = parser.parse_args()
    print(machine())
    print(markdown(rows(args)))


if __name__ == "__main__":
    main()
