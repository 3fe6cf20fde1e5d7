"""The BDMC sandwich (Grosse et al. 2015; `vi_lab/evaluation/bdmc.py`) of a run's decoder, on
points simulated from it: per number of annealing steps, the mean forward (lower) and reverse
(upper) estimates of log p(x) and the width upper - lower, each ± its standard error over
the points. The width bounds how far AIS with that schedule is from log p(x) on data like
the model's own.

Run: python -m benchmarks.bdmc RUN_DIR [--num-points 100] [--steps 100 1000] [--chains 4] [--seed 0]
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import Tensor

from vi_lab.evaluation.bdmc import bdmc_bounds, simulate
from vi_lab.runs.folder import load_run


def _mean_se(values: Tensor) -> str:
    return f"{values.mean():.2f} ± {values.std() / math.sqrt(values.numel()):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--num-points", type=int, default=100)
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    decoder = load_run(args.run_dir).model.decoder.eval()
    torch.manual_seed(args.seed)
    x, z = simulate(decoder, args.num_points)
    print(f"BDMC on {args.num_points} points simulated from {args.run_dir}'s decoder, {args.chains} chains")
    print("| AIS steps | lower (forward) | upper (reverse) | width |\n|---|---|---|---|")
    for num_steps in args.steps:
        torch.manual_seed(args.seed + num_steps)
        lower, upper = bdmc_bounds(decoder, x, z, num_steps=num_steps, num_chains=args.chains)
        print(f"| {num_steps} | {_mean_se(lower)} | {_mean_se(upper)} | {_mean_se(upper - lower)} |")


if __name__ == "__main__":
    main()
