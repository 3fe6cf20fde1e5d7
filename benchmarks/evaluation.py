"""Evaluation cost on Fashion-MNIST: refinement and IWAE points/s, and IWAE's peak memory.

Model: the Cremer et al. (2018) decoder (z=50, MLP 200-200, Bernoulli), untrained
weights (the cost does not depend on them). Peak memory is the rise above the level
before the call: on CUDA from torch's allocator statistics, on CPU from the resident set
size sampled every millisecond from /proc/self/statm while the call runs.

Run: python benchmarks/evaluation.py [--points 1000] [--budget-mb 512]
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from vi_lab.config import load_config
from vi_lab.data.datasets import load_data
from vi_lab.evaluation.iwae import iwae_log_marginal
from vi_lab.inference.gaussian import standard_normal_params
from vi_lab.inference.refine import refine
from vi_lab.models.decoders import build_decoder
from vi_lab.runtime import resolve_device

ROOT = Path(__file__).parents[1]
PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(seconds, peak MB above the starting level) of one call."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        started = time.perf_counter()
        fn()
        torch.cuda.synchronize(device)
        return time.perf_counter() - started, (torch.cuda.max_memory_allocated(device) - base) / 2**20
    base, peak, done = _rss_bytes(), [0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.001)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.perf_counter()
    fn()
    seconds = time.perf_counter() - started
    done.set()
    watcher.join()
    return seconds, max(peak[0] - base, 0) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--budget-mb", type=float, default=512.0)
    parser.add_argument("--refine-points", type=int, default=500)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    config = load_config(ROOT / "configs" / "amortized.yaml")
    x = load_data(config.data, device).x["test"][: args.points]
    torch.manual_seed(0)
    decoder = build_decoder(config.model, 784, (1, 28, 28)).to(device)
    decoder.requires_grad_(False)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")

    xr = x[: args.refine_points]
    refined = refine(
        decoder, xr, *standard_normal_params(xr.shape[0], 50, device), config.eval.refine, progress=True
    )
    steps = refined.steps.float().mean().item()
    print(
        f"refinement (S={config.eval.refine.num_samples}): {xr.shape[0]} points, "
        f"{steps:.0f} steps on average, "
        f"{refined.seconds:.1f} s -> {xr.shape[0] / refined.seconds:.1f} points/s, "
        f"{xr.shape[0] * steps / refined.seconds:.0f} point-steps/s"
    )

    loc, log_scale = refined.loc[:1].expand(x.shape[0], -1), refined.log_scale[:1].expand(x.shape[0], -1)
    warm = slice(0, 100)  # a short warm-up, so neither budget pays for first-call costs
    iwae_log_marginal(decoder, x[warm], loc[warm], log_scale[warm], 500, memory_budget_mb=args.budget_mb / 8)
    for budget in (args.budget_mb / 8, args.budget_mb):  # smallest first: freed memory stays in the process
        seconds, peak = peak_memory_mb(
            lambda b=budget: iwae_log_marginal(decoder, x, loc, log_scale, args.samples, memory_budget_mb=b),
            device,
        )
        print(
            f"IWAE K={args.samples} on {x.shape[0]} points, budget {budget:.0f} MB: {seconds:.1f} s -> "
            f"{x.shape[0] / seconds:.1f} points/s, peak {peak:.0f} MB above start"
        )


if __name__ == "__main__":
    main()
