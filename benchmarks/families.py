"""What a variational family costs per training step, against the diagonal Gaussian.

On the Fashion-MNIST model of `configs/local.yaml` and `configs/amortized.yaml` (z = 50,
MLP 200-200), at their training shapes, measured side by side in interleaved rounds:
- per-datapoint: one inner-loop step (`fit_local` on 100 rows, 1 sample, no checks), the
  full-covariance Gaussian (1,325 params per row) and the planar flow (10 layers, 1,110)
  against the diagonal (100) with its closed-form gradient;
- amortized: one training step (`train.train_step`: encoder, ELBO, backward, Adam) with the
  encoder emitting each family's params, against the diagonal's step.
Ratios above 1 are the family's price per step; a decoder step costs the same in all.

Run: python -m benchmarks.families [--rounds R] [--device auto]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import Tensor

from benchmarks.table import Row, machine, markdown, ratio_row, side_by_side
from vi_lab.config import InnerLoopConfig, load_config
from vi_lab.data.datasets import Data, load_data
from vi_lab.inference.families import Family, build_family
from vi_lab.inference.local_fit import RowState, fit_local
from vi_lab.models.decoders import build_decoder
from vi_lab.models.model import LatentVariableModel, build_model
from vi_lab.runtime import resolve_device
from vi_lab.train import train_step

ROOT = Path(__file__).parents[1]
NAMES = ("diagonal", "full", "flow")


def inner_step_ms(decoder: torch.nn.Module, family: Family, x: Tensor, steps: int) -> float:
    """ms per inner-loop step of `steps` steps from the prior (one window: no checks run)."""
    config = InnerLoopConfig(max_steps=steps, num_samples=1, check_every=steps)
    rows = RowState.prior(x.shape[0], family, x.device)
    started = time.perf_counter()
    fit_local(decoder, family, x, rows, config).steps.sum().item()  # .item(): wait for the device
    return (time.perf_counter() - started) / steps * 1e3


def amortized_setup(
    name: str, data: Data, device: torch.device
) -> tuple[LatentVariableModel, torch.optim.Optimizer]:
    """The amortized model of configs/amortized.yaml with an encoder emitting family `name`'s params."""
    config = load_config(ROOT / "configs" / "amortized.yaml", [f"inference.family={name}"])
    torch.manual_seed(0)
    model = build_model(config, data).to(device)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)


def amortized_step_ms(
    model: LatentVariableModel, optimizer: torch.optim.Optimizer, x: Tensor, steps: int
) -> float:
    """ms per amortized training step (`train_step`: forward, backward, Adam) on the batch x."""
    idx = torch.arange(x.shape[0], device=x.device)
    started = time.perf_counter()
    for _ in range(steps):
        terms = train_step(model, optimizer, x, idx, 1.0, 1)
    terms["elbo"].sum().item()  # wait for the device
    return (time.perf_counter() - started) / steps * 1e3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("families")
    group.add_argument("--family-steps", type=int, default=50, help="steps per measure of the family rows")


def rows(args: argparse.Namespace) -> list[Row]:
    device = resolve_device(args.device)
    config = load_config(ROOT / "configs" / "amortized.yaml")
    data = load_data(config.data, device)
    x = data.x["train"][:100]
    torch.manual_seed(0)
    decoder = build_decoder(config.model, data.data_dim, data.image_shape).to(device).requires_grad_(False)
    families = {name: build_family(name, config.model.latent_dim, config.inference) for name in NAMES}
    steps = args.family_steps
    local = side_by_side(
        {name: lambda f=family: inner_step_ms(decoder, f, x, steps) for name, family in families.items()},
        args.rounds,
    )
    setups = {name: amortized_setup(name, data, device) for name in NAMES}
    amortized = side_by_side(
        {name: lambda s=setup: amortized_step_ms(*s, x, steps) for name, setup in setups.items()}, args.rounds
    )
    table: list[Row] = []
    for name in ("full", "flow"):
        size = f"{families[name].num_params} vs {families['diagonal'].num_params} params"
        what = f"per-datapoint inner-loop step, {name} vs diagonal ({size}, 100 rows)"
        table.append(ratio_row(what, local, name, "diagonal", "ms", "", "{:.2f}"))
        what = f"amortized training step, {name} vs diagonal (batch 100)"
        table.append(ratio_row(what, amortized, name, "diagonal", "ms", "", "{:.2f}"))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    add_arguments(parser)
    args = parser.parse_args()
    print(machine())
    print(markdown(rows(args)))


if __name__ == "__main__":
    main()
