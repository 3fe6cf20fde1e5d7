"""Refining a planar flow from an encoder's q: the layers' step size against the base's.

On the first N validation points of a flow-trained run (`configs/cremer2018_flow.yaml`), q is
refined from the encoder's guess with the refinement defaults (`eval.refine`), once with every
parameter at the row's Adam step size and once with the layers at `LAYER_STEP_SCALE` of it
(`PlanarFlow.step_scales`, the lab's choice), and the mean ELBO gain over the encoder's q is
printed with its standard error over the points (ELBOs with 1000 samples). docs/families.md.

Run: python -m benchmarks.flow_steps RUN_DIR [--num-points 50]
"""

from __future__ import annotations

import argparse
import math

import torch

from vi_lab.inference.families import PlanarFlow
from vi_lab.inference.objectives import chunked_elbo
from vi_lab.inference.refine import refine
from vi_lab.runs.folder import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--num-points", type=int, default=50)
    args = parser.parse_args()
    run = load_run(args.run_dir)
    family = run.model.family
    if not isinstance(family, PlanarFlow):
        raise SystemExit(f"{args.run_dir} was trained with the {family.name} family, not a flow")
    x = run.data.x["valid"][: args.num_points]
    decoder, config = run.model.decoder, run.config.eval.refine
    torch.manual_seed(0)
    with torch.no_grad():
        guess = run.model.posterior.guess(x)
        start = chunked_elbo(decoder, family, x, guess, x.shape[0], 1000)
    print(f"{args.run_dir}: {x.shape[0]} validation points, encoder's L[q] {start.mean():.2f}\n")
    print("| layers' step size | L[q*] − L[q] (mean ± s.e.) | smallest | steps |\n|---|---|---|---|")
    for label, scaled in (("the base's (every parameter at eval.refine.lr)", False), ("a tenth of it", True)):
        # the unscaled flow: the same family with step_scales switched off for this refinement
        original = PlanarFlow.step_scales
        if not scaled:
            PlanarFlow.step_scales = lambda self, device="cpu": None
        try:
            fitted = refine(decoder, family, x, guess, config, x.shape[0], False)
        finally:
            PlanarFlow.step_scales = original
        with torch.no_grad():
            gain = chunked_elbo(decoder, family, x, fitted.params, x.shape[0], 1000) - start
        se = gain.std() / math.sqrt(gain.numel())
        steps = fitted.steps.float().mean()
        print(f"| {label} | {gain.mean():+.2f} ± {se:.2f} | {gain.min():+.2f} | {steps:.0f} |")


if __name__ == "__main__":
    main()
