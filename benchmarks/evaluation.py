"""Evaluation that scales: refinement and IWAE-5000 time and peak memory as the points grow.

Model: the Cremer et al. (2018) decoder (z=50, MLP 200-200, Bernoulli), untrained weights
(the cost per step does not depend on them; the number of refinement steps does, so the
refinement figures are those of this decoder). Each size is measured once, in order N, 2N:
- refinement (`eval.refine`, chunks of `eval.batch_size` points): seconds per point at 2N
  against N (linear: 1.0), and its time against the cost of the steps its rows took
  (every row paying only its own steps, at the per-row cost of a full chunk): how little
  the rows that stopped cost (the working set is compacted once most rows are done);
- IWAE with the refined q as proposal: seconds per point at 2N against N, and its peak
  memory against the memory budget;
- both extrapolated linearly to the 10,000 test points (labelled as such).
Peak memory is the rise above the level before the call: on CUDA from torch's allocator
statistics, on CPU from the resident set size sampled every millisecond from
/proc/self/statm while the call runs.

Run: python -m benchmarks.evaluation [--points N] [--samples K] [--budget-mb MB]
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.table import Row, machine, markdown
from benchmarks.throughput import inner_step_seconds
from vi_lab.config import load_config
from vi_lab.data.datasets import load_data
from vi_lab.evaluation.iwae import iwae_log_marginal
from vi_lab.inference.gaussian import standard_normal_params
from vi_lab.inference.refine import Refined, refine
from vi_lab.models.decoders import build_decoder
from vi_lab.runtime import memory_budget_mb, resolve_device

ROOT = Path(__file__).parents[1]
PAGE = os.sysconf("SC_PAGE_SIZE")
TEST_POINTS = 10_000


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> tuple[object, float, float]:
    """(result, seconds, peak MB above the starting level) of one call."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        started = time.perf_counter()
        result = fn()
        torch.cuda.synchronize(device)
        return result, time.perf_counter() - started, (torch.cuda.max_memory_allocated(device) - base) / 2**20
    base, peak, done = _rss_bytes(), [0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.001)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - started
    done.set()
    watcher.join()
    return result, seconds, max(peak[0] - base, 0) / 2**20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("evaluation")
    group.add_argument("--points", type=int, default=50, help="N: sizes N and 2N are measured")
    group.add_argument("--samples", type=int, default=5000, help="K of IWAE")
    group.add_argument(
        "--budget-mb", type=float, default=None, help="IWAE memory budget (default: the device's)"
    )
    group.add_argument("--batch-size", type=int, default=None, help="points refined together (default: N)")


def rows(args: argparse.Namespace) -> list[Row]:
    device = resolve_device(args.device)
    config = load_config(ROOT / "configs" / "amortized.yaml")
    sizes = (args.points, 2 * args.points)
    x_all = load_data(config.data, device).x["test"][: sizes[-1]]
    torch.manual_seed(0)
    decoder = build_decoder(config.model, 784, (1, 28, 28)).to(device).requires_grad_(False)
    budget = memory_budget_mb(device) if args.budget_mb is None else args.budget_mb
    batch_size = args.batch_size or args.points
    refine_config = config.eval.refine
    latent = config.model.latent_dim

    warm = x_all[:10]  # first-call costs (allocator, kernels) paid by neither size
    iwae_log_marginal(decoder, warm, *standard_normal_params(10, latent, device), 10, memory_budget_mb=budget)
    refine_seconds, refine_steps, refine_mb, iwae_seconds, iwae_mb = [], [], [], [], []
    for num in sizes:
        x = x_all[:num]
        start = standard_normal_params(num, latent, device)
        refined, _, mb = peak_memory_mb(
            lambda x=x, s=start: refine(decoder, x, *s, refine_config, batch_size), device
        )
        assert isinstance(refined, Refined)
        refine_seconds.append(refined.seconds)
        refine_steps.append(refined.steps.sum().item())
        refine_mb.append(mb)
        _, seconds, mb = peak_memory_mb(
            lambda x=x, r=refined: iwae_log_marginal(
                decoder, x, r.loc, r.log_scale, args.samples, memory_budget_mb=budget
            ),
            device,
        )
        iwae_seconds.append(seconds)
        iwae_mb.append(mb)
    # What the rows' own steps cost at the per-row price of a full chunk (a fixed-length fit).
    row_step = (
        statistics.median(
            inner_step_seconds(decoder, x_all[:batch_size], refine_config.num_samples, 10) for _ in range(3)
        )
        / batch_size
    )
    point_steps = refine_steps[1]
    refine_pp = [s / n for s, n in zip(refine_seconds, sizes, strict=True)]
    iwae_pp = [s / n for s, n in zip(iwae_seconds, sizes, strict=True)]
    refine_ps = [s / k * 1e3 for s, k in zip(refine_seconds, refine_steps, strict=True)]  # ms/point-step
    n1, n2 = sizes
    return [
        Row(
            f"refinement, ms/point-step at {n2} vs {n1} points (chunks of {batch_size})",
            f"{refine_ps[1]:.3f} ms ({refine_pp[1]:.3f} s/point), peak +{refine_mb[1]:.0f} MB",
            f"{refine_ps[0]:.3f} ms ({refine_pp[0]:.3f} s/point), peak +{refine_mb[0]:.0f} MB",
            refine_ps[1] / refine_ps[0],
            goal="≈ 1 (linear)",
        ),
        Row(
            f"refinement vs its rows' own steps ({n2} points)",
            f"{refine_seconds[1]:.1f} s",
            f"{point_steps:.0f} point-steps x {row_step * 1e3:.3f} ms = {point_steps * row_step:.1f} s",
            refine_seconds[1] / (point_steps * row_step),
            goal="<= 1.3",
        ),
        Row(
            f"IWAE K={args.samples}, s/point at {n2} vs {n1} points",
            f"{iwae_pp[1]:.3f} s/point",
            f"{iwae_pp[0]:.3f} s/point",
            iwae_pp[1] / iwae_pp[0],
            goal="≈ 1 (linear)",
        ),
        Row(
            f"IWAE K={args.samples} peak memory vs budget ({n2} points)",
            f"+{iwae_mb[1]:.0f} MB",
            f"budget {budget:.0f} MB",
            iwae_mb[1] / budget,
            goal="<= 1",
        ),
        Row(
            f"refinement + IWAE K={args.samples} on {TEST_POINTS} points, EXTRAPOLATED from {n2}",
            f"{(refine_pp[1] + iwae_pp[1]) * TEST_POINTS / 60:.0f} min "
            f"({refine_pp[1] * TEST_POINTS / 60:.0f} + {iwae_pp[1] * TEST_POINTS / 60:.0f})",
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
