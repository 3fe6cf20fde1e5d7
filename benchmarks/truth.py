"""The estimators against exact truth on a non-Gaussian posterior: the banana model.

On the first N test points of `banana` data (configs/two_d.yaml's data; curvature and noise
as configured), log p(x) is computed by quadrature (`evaluation/quadrature.py`), q* is
refined from the prior in each family with the refinement defaults, and each estimator's
mean error against the exact value is printed with its standard error over the points:
L[q*] per family (1000 samples), IWAE-K with each family's q* and with each point's best
q* as proposal and with the Student-t of each point's best Gaussian q*, and AIS from the
prior and from the best q*. The figures of docs/families.md.

Run: python -m benchmarks.truth [--num-points 200] [--seed 0] [data.banana.curvature=0.3 ...]
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import Tensor

from vi_lab.config import (
    DataConfig,
    EvalConfig,
    FamilyName,
    FlowConfig,
    InferenceConfig,
    build,
    parse_overrides,
)
from vi_lab.data.datasets import load_data
from vi_lab.evaluation.ais import ais_log_marginal
from vi_lab.evaluation.iwae import iwae_log_marginal
from vi_lab.evaluation.quadrature import grid_log_marginal
from vi_lab.inference.families import build_family
from vi_lab.inference.objectives import chunked_elbo
from vi_lab.inference.refine import refine
from vi_lab.models.banana import BananaDecoder


def _row(what: str, estimate: Tensor, exact: Tensor) -> str:
    error = estimate - exact
    return f"| {what} | {error.mean():+.4f} ± {error.std() / math.sqrt(error.numel()):.4f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-points", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flow-layers", type=int, default=8)
    parser.add_argument("--samples", type=int, default=5000, help="K of IWAE")
    parser.add_argument("overrides", nargs="*", help="data settings, e.g. banana.curvature=0.5")
    args = parser.parse_args()
    config = build(DataConfig, {"name": "banana", "binarize": "none"}, parse_overrides(args.overrides))
    data = load_data(config, torch.device("cpu"))
    decoder = BananaDecoder.from_truth(data.truth)
    x = data.x["test"][: args.num_points]
    torch.manual_seed(args.seed)
    quadrature = grid_log_marginal(decoder, x)
    exact = quadrature.log_px
    spec = config.banana
    print(f"banana: curvature {spec.curvature}, noise {spec.noise_std}, {x.shape[0]} test points")
    print(f"seed {args.seed}; quadrature: largest error bound {quadrature.error.max():.1e} nats")
    print("\n| estimate − exact log p(x) (nats per point) | mean ± s.e. |\n|---|---|")
    refined = {}
    for name in FamilyName:
        family = build_family(name, 2, InferenceConfig(flow=FlowConfig(num_layers=args.flow_layers)))
        params = refine(decoder, family, x, family.prior(x.shape[0]), EvalConfig().refine).params
        with torch.no_grad():
            elbo = chunked_elbo(decoder, family, x, params, 500, 1000)
        refined[name.value] = (family, params, elbo)
        print(
            _row(
                f"L[q*], {family.name}{f' ({args.flow_layers} layers)' if name == FamilyName.flow else ''}",
                elbo,
                exact,
            )
        )
    best = torch.stack([elbo for _, _, elbo in refined.values()]).argmax(0)
    chosen_q = torch.empty(x.shape[0])
    for index, (name, (family, params, _)) in enumerate(refined.items()):
        estimate = iwae_log_marginal(decoder, family, x, params, args.samples)
        print(_row(f"IWAE-{args.samples}, q*_{name} as proposal", estimate, exact))
        chosen_q[best == index] = estimate[best == index]
    print(_row(f"IWAE-{args.samples}, each point's best q* (as `evaluate`)", chosen_q, exact))
    gaussian = [(family, params, elbo) for family, params, elbo in refined.values() if family.is_gaussian]
    best = torch.stack([elbo for _, _, elbo in gaussian]).argmax(0)
    heavy = torch.empty(x.shape[0])
    for index, (family, params, _) in enumerate(gaussian):
        chosen = best == index
        heavy[chosen] = iwae_log_marginal(
            decoder, family, x[chosen], params[chosen], args.samples, tail_dof=3.0
        )
    print(
        _row(
            f"IWAE-{args.samples}, Student-t (3 dof) of each point's best Gaussian q* "
            "(as `evaluate` with eval.proposal_dof=3)",
            heavy,
            exact,
        )
    )
    prior = build_family("diagonal", 2)
    print(
        _row(
            "AIS, 500 steps, 16 chains, from the prior",
            ais_log_marginal(decoder, prior, x, prior.prior(x.shape[0])),
            exact,
        )
    )
    family, params, _ = refined["full"]
    print(
        _row("AIS, 500 steps, 16 chains, from q*_full", ais_log_marginal(decoder, family, x, params), exact)
    )


if __name__ == "__main__":
    main()
