"""What the refinement's stopping settings cost and what they leave on the table, on a trained run.

On the first N test points, q is refined from the run's start (the encoder's q, or the prior
for a per-datapoint run) in the run's own family, with the lab's defaults (`EvalConfig().refine`)
once with the checks of the previous rule (`PREVIOUS_CHECKS`: windows of 50 steps, 16 draws per
check, 4 windows, tol 0.05) and once as they are, under the present stopping rule
(`vi_lab/inference/local_fit.py`). Per setting: the steps taken (mean), the fraction of points
at `max_steps`, seconds, and L[q*] (ELBO with 5000 samples, the same draws for both) as the
paired difference against the first ± its standard error over the points. docs/inner_loop.md.

Run: python -m benchmarks.refine_cost RUN_DIR [--num-points 100] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, replace

import torch

from vi_lab.config import EvalConfig
from vi_lab.inference.objectives import chunked_elbo
from vi_lab.inference.refine import refine
from vi_lab.runs.folder import load_run

ELBO_SAMPLES = 5000
PREVIOUS_CHECKS = {"check_every": 50, "check_samples": 16, "stop_windows": 4, "tol": 0.05}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--num-points", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run = load_run(args.run_dir)
    model, x = run.model, run.data.x["test"][: args.num_points]
    with torch.no_grad():
        start = model.posterior.guess(x)
    defaults = EvalConfig().refine
    settings = {"previous checks": replace(defaults, **PREVIOUS_CHECKS), "present defaults": defaults}
    print(f"Refinement of {x.shape[0]} test points of {args.run_dir} ({model.family.name}), from its start")
    for name, config in settings.items():
        print(f"- {name}: " + ", ".join(f"{k}={v}" for k, v in asdict(config).items()))
    print("| settings | steps (mean) | at max_steps | seconds | L[q*] − L[q*] previous (± SE) |")
    print("|---|---|---|---|---|")
    reference = None
    for name, config in settings.items():
        torch.manual_seed(args.seed)
        refined = refine(model.decoder, model.family, x, start, config)
        torch.manual_seed(args.seed + 1)  # the same draws for every setting's ELBO
        with torch.no_grad():
            elbo = chunked_elbo(model.decoder, model.family, x, refined.params, 500, ELBO_SAMPLES)
        reference = elbo if reference is None else reference
        diff = elbo - reference
        print(
            f"| {name} | {refined.steps.float().mean():.0f} | {refined.capped.float().mean():.0%} | "
            f"{refined.seconds:.0f} | {diff.mean():+.4f} ± {diff.std() / math.sqrt(diff.numel()):.4f} |"
        )


if __name__ == "__main__":
    main()
