"""Training throughput: the lab's code against references measured in the same run.

- Amortized training: `vi_lab.train.train` (with its logging, checks and clock) against a
  minimal hand-written PyTorch VAE loop with the same architecture, data, batch size and
  Adam settings, in examples/s. Goal >= 1.0. The lab uses the fused Adam kernel; a second
  row compares it with the plain loop using that kernel too (the lab's own overhead).
- One inner-loop step (`fit_local`: the reparameterization gradient of every row and its
  per-row Adam update) against one bare decoder forward+backward with respect to z at the
  same batch, the work no implementation can avoid. Goal <= 1.3, eagerly and compiled
  (`runtime.compile`), at the training setting (100 rows, 1 sample) and the refinement
  setting (500 rows, 10 samples). The steps alone: a fit as long as one window runs no
  check. A second measure, a whole visit of `configs/local.yaml` per step, adds what its
  window checks (a forward pass of 2 x check_samples draws every 10 steps) cost.
- The vectorized inner loop against a textbook loop over datapoints with one
  torch.optim.Adam per point, both taking exactly K steps per point, in points/s.
- On CUDA only: bf16 autocast against float32 training (`runtime.precision`), in examples/s
  and in the validation log p(x) it leads to.

Run: python -m benchmarks.throughput [--rounds R] [--device auto]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.table import Row, machine, markdown, ratio_row, side_by_side
from vi_lab.config import InnerLoopConfig, load_config
from vi_lab.data.datasets import load_data
from vi_lab.inference.families import Diagonal
from vi_lab.inference.local_fit import RowState, fit_local
from vi_lab.models.decoders import NeuralDecoder, build_decoder
from vi_lab.runtime import resolve_device
from vi_lab.train import train

ROOT = Path(__file__).parents[1]
# The run's own measurements (validation, row gap) are outside its training clock; kept tiny.
QUIET = ["progress=false", "train.valid_num_points=2", "train.valid_num_samples=2", "eval.refine.max_steps=2"]


def lab_amortized(num_train: int, device: str, overrides: tuple[str, ...] = ()) -> float:
    """Examples/s of one epoch of `train` on the amortized config."""
    return _train_amortized(num_train, device, (*QUIET, *overrides))["examples_per_second"]


def _train_amortized(num_train: int, device: str, overrides: tuple[str, ...]) -> dict:
    config = load_config(
        ROOT / "configs" / "amortized.yaml",
        [f"data.num_train={num_train}", "train.epochs=1", f"device={device}", *overrides],
    )
    with tempfile.TemporaryDirectory() as run_dir:
        return train(config, Path(run_dir) / "run")


def precision_bound_row(num_train: int, device: str) -> Row:
    """The validation log p(x) (IWAE-500 on 200 points, float32) after one epoch of training in
    bf16 autocast against float32, same seed: the effect of bf16 training on a reported bound."""
    logs = {
        precision: _train_amortized(num_train, device, ("progress=false", f"runtime.precision={precision}"))
        for precision in ("bf16", "float32")
    }
    (bf16, bf16_se), (fp32, fp32_se) = ((m["valid_log_px"], m["valid_log_px_se"]) for m in logs.values())
    return Row(
        f"valid log p(x) after 1 epoch ({num_train} examples), bf16 training",
        f"{bf16:.2f} ± {bf16_se:.2f} nats",
        f"float32 training: {fp32:.2f} ± {fp32_se:.2f} nats",
        None,
        goal=f"difference {bf16 - fp32:+.2f} nats",
    )


def reference_amortized(x_train: Tensor, fused: bool = False) -> float:
    """The smallest honest VAE loop: same MLPs (784-200-200-2x50, 50-200-200-784, ELU), Adam 1e-3
    (PyTorch's default Adam, or the fused one that the lab uses)."""
    device, num_train = x_train.device, x_train.shape[0]
    encoder = nn.Sequential(
        nn.Linear(784, 200), nn.ELU(), nn.Linear(200, 200), nn.ELU(), nn.Linear(200, 100)
    ).to(device)
    decoder = nn.Sequential(
        nn.Linear(50, 200), nn.ELU(), nn.Linear(200, 200), nn.ELU(), nn.Linear(200, 784)
    ).to(device)
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-3, fused=fused)
    examples, started = 0, time.perf_counter()
    order = torch.randperm(num_train, device=device)
    for begin in range(0, num_train, 100):
        x = x_train[order[begin : begin + 100]]
        loc, log_scale = encoder(x).chunk(2, dim=-1)
        z = loc + log_scale.exp() * torch.randn_like(loc)
        recon = -F.binary_cross_entropy_with_logits(decoder(z), x, reduction="none").sum(-1)
        kl = 0.5 * (loc.pow(2) + (2 * log_scale).exp() - 1 - 2 * log_scale).sum(-1)
        loss = -(recon - kl).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        examples += x.shape[0]
    loss.item()  # wait for the device
    return examples / (time.perf_counter() - started)


def inner_step_seconds(
    decoder: NeuralDecoder, x: Tensor, num_samples: int, steps: int, compiled: bool = False
) -> float:
    """Seconds per step of `fit_local` taking exactly `steps` steps: its window is the whole
    fit, so no check runs and no row stops (the steps alone)."""
    config = InnerLoopConfig(max_steps=steps, num_samples=num_samples, check_every=steps)
    return fit_seconds_per_step(decoder, x, config, compiled)


def fit_seconds_per_step(
    decoder: NeuralDecoder, x: Tensor, config: InnerLoopConfig, compiled: bool = False
) -> float:
    """Seconds of one `fit_local` from the prior over `config.max_steps` (its checks included)."""
    family = Diagonal(decoder.latent_dim)
    rows = RowState.prior(x.shape[0], family, x.device)
    started = time.perf_counter()
    fit_local(decoder, family, x, rows, config, compiled=compiled).steps.sum().item()  # .item(): wait
    return (time.perf_counter() - started) / config.max_steps


def bare_step_seconds(decoder: NeuralDecoder, x: Tensor, num_samples: int, steps: int) -> float:
    """Seconds per decoder forward+backward with respect to z: the unavoidable work of a step."""
    started = time.perf_counter()
    for _ in range(steps):
        z = torch.randn(num_samples, x.shape[0], decoder.latent_dim, device=x.device, requires_grad=True)
        (grad,) = torch.autograd.grad(decoder.log_prob(x, z).sum(), z)
    grad.sum().item()
    return (time.perf_counter() - started) / steps


def lab_inner_loop(decoder: NeuralDecoder, x: Tensor, steps: int) -> float:
    """Points/s of the training inner loop (`fit_local` on minibatches of 100, exactly K steps)."""
    started = time.perf_counter()
    for begin in range(0, x.shape[0], 100):
        seconds = inner_step_seconds(decoder, x[begin : begin + 100], 1, steps)
    del seconds
    return x.shape[0] / (time.perf_counter() - started)


def textbook_inner_loop(decoder: NeuralDecoder, x: Tensor, steps: int) -> float:
    """Per-datapoint VI as usually written: for each datapoint, its own parameters and optimizer."""
    started = time.perf_counter()
    for i in range(x.shape[0]):
        loc = torch.zeros(1, 50, device=x.device, requires_grad=True)
        log_scale = torch.zeros(1, 50, device=x.device, requires_grad=True)
        optimizer = torch.optim.Adam([loc, log_scale], lr=0.05)
        for _ in range(steps):
            z = loc + log_scale.exp() * torch.randn_like(loc)
            recon = -F.binary_cross_entropy_with_logits(decoder.net(z), x[i : i + 1], reduction="none").sum()
            kl = 0.5 * (loc.pow(2) + (2 * log_scale).exp() - 1 - 2 * log_scale).sum()
            optimizer.zero_grad()
            (kl - recon).backward()
            optimizer.step()
    loc.sum().item()
    return x.shape[0] / (time.perf_counter() - started)


def step_rows(
    what: str, decoder: NeuralDecoder, x: Tensor, num_samples: int, steps: int, rounds: int
) -> list[Row]:
    """Inner-loop step, eager and compiled, against the bare decoder forward+backward, in ms."""
    values = side_by_side(
        {
            "eager": lambda: inner_step_seconds(decoder, x, num_samples, steps) * 1e3,
            "compiled": lambda: inner_step_seconds(decoder, x, num_samples, steps, compiled=True) * 1e3,
            "decoder fwd+bwd": lambda: bare_step_seconds(decoder, x, num_samples, steps) * 1e3,
        },
        rounds,
    )
    shape = f"{what}, {x.shape[0]} rows x {num_samples} samples"
    rows = [
        ratio_row(
            f"inner-loop step, {side} ({shape})", values, side, "decoder fwd+bwd", "ms", "<= 1.3", "{:.2f}"
        )
        for side in ("eager", "compiled")
    ]
    return [
        *rows,
        ratio_row(f"compiled vs eager step ({shape})", values, "compiled", "eager", "ms", "< 1", "{:.2f}"),
    ]


def visit_row(decoder: NeuralDecoder, x: Tensor, rounds: int) -> Row:
    """A whole visit of `configs/local.yaml`'s inner loop (its window checks and step-size
    halvings included) per step, against the bare decoder forward+backward."""
    inner = load_config(ROOT / "configs" / "local.yaml").inference.inner
    samples, steps = inner.num_samples, inner.max_steps
    values = side_by_side(
        {
            "visit": lambda: fit_seconds_per_step(decoder, x, inner) * 1e3,
            "decoder fwd+bwd": lambda: bare_step_seconds(decoder, x, samples, steps) * 1e3,
        },
        rounds,
    )
    what = (
        f"inner-loop visit of configs/local.yaml, per step ({x.shape[0]} rows, {inner.max_steps} steps, "
        f"a check every {inner.check_every})"
    )
    return ratio_row(what, values, "visit", "decoder fwd+bwd", "ms", "", "{:.2f}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("throughput")
    group.add_argument(
        "--num-train", type=int, default=60000, help="examples per amortized-training round (one real epoch)"
    )
    group.add_argument("--amortized-rounds", type=int, default=5, help="rounds of the amortized rows")
    group.add_argument("--step-rounds", type=int, default=7, help="rounds of the inner-loop step rows")
    group.add_argument("--inner-points", type=int, default=1000, help="points for the lab's inner loop")
    group.add_argument("--textbook-points", type=int, default=50, help="points for the textbook loop")
    group.add_argument("--inner-steps", type=int, default=20)


def rows(args: argparse.Namespace) -> list[Row]:
    device = resolve_device(args.device)
    config = load_config(ROOT / "configs" / "amortized.yaml")
    x_all = load_data(config.data, device).x["train"]
    torch.manual_seed(0)
    table: list[Row] = []

    values = side_by_side(
        {
            "lab": lambda: lab_amortized(args.num_train, args.device),
            "plain VAE loop": lambda: reference_amortized(x_all[: args.num_train]),
            "plain loop, fused Adam": lambda: reference_amortized(x_all[: args.num_train], fused=True),
        },
        args.amortized_rounds,
    )
    table.append(ratio_row("amortized training", values, "lab", "plain VAE loop", "examples/s", ">= 1.0"))
    table.append(
        ratio_row("amortized training, same Adam", values, "lab", "plain loop, fused Adam", "examples/s", "")
    )

    decoder = build_decoder(config.model, 784, (1, 28, 28)).to(device).requires_grad_(False)
    for what, num_rows, num_samples, steps in (("training", 100, 1, 50), ("refinement", 500, 10, 4)):
        table += step_rows(what, decoder, x_all[:num_rows], num_samples, steps, args.step_rounds)
    table.append(visit_row(decoder, x_all[:100], args.step_rounds))

    values = side_by_side(
        {
            "lab": lambda: lab_inner_loop(decoder, x_all[: args.inner_points], args.inner_steps),
            "per-point loop": lambda: textbook_inner_loop(
                decoder, x_all[: args.textbook_points], args.inner_steps
            ),
        },
        args.rounds,
    )
    table.append(
        ratio_row(f"inner loop, K={args.inner_steps}", values, "lab", "per-point loop", "points/s", ">= 30")
    )

    if device.type == "cuda":
        values = side_by_side(
            {
                "bf16": lambda: lab_amortized(args.num_train, args.device, ("runtime.precision=bf16",)),
                "float32": lambda: lab_amortized(args.num_train, args.device),
            },
            args.rounds,
        )
        table.append(
            ratio_row("amortized training, bf16 autocast", values, "bf16", "float32", "examples/s", "> 1")
        )
        table.append(precision_bound_row(args.num_train, args.device))
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
