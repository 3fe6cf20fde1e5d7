"""Training throughput, the lab's code against references measured in the same run.

(a) Amortized training: `vi_lab.training.train` (with its logging, progress bar and
    checks) against a minimal hand-written PyTorch VAE loop with the same architecture,
    data, batch size and optimizer. Target ratio >= 0.95.
(b) The per-datapoint inner loop: `LocalPosterior.update` on minibatches (vectorized
    over points, per-row Adam) against a textbook loop over datapoints with one
    torch.optim.Adam per point, both taking exactly K steps per point. Target >= 30.

Method: both sides are warmed up, then measured in alternating rounds (so slow drift of
a shared machine hits both alike), and each side's best round is compared. Every round
is printed.

Run: python benchmarks/throughput.py [--rounds R] [--num-train N] [--epochs E]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vi_lab.config import InnerLoopConfig, load_config
from vi_lab.data.datasets import load_data
from vi_lab.models.decoders import build_decoder
from vi_lab.models.posteriors import LocalPosterior
from vi_lab.runtime import resolve_device
from vi_lab.train import train

ROOT = Path(__file__).parents[1]


def lab_amortized(num_train: int, epochs: int, device: str) -> float:
    config = load_config(
        ROOT / "configs" / "amortized.yaml",
        [f"data.num_train={num_train}", f"train.epochs={epochs}", "progress=false", f"device={device}"],
    )
    with tempfile.TemporaryDirectory() as run_dir:
        return train(config, Path(run_dir) / "run")["examples_per_second"]


def reference_amortized(num_train: int, epochs: int, device: torch.device) -> float:
    """The smallest honest VAE loop: same MLPs (784-200-200-2x50, 50-200-200-784, ELU), Adam 1e-3."""
    x_train = load_data(load_config(ROOT / "configs" / "amortized.yaml").data, device).x["train"][:num_train]
    encoder = nn.Sequential(
        nn.Linear(784, 200), nn.ELU(), nn.Linear(200, 200), nn.ELU(), nn.Linear(200, 100)
    ).to(device)
    decoder = nn.Sequential(
        nn.Linear(50, 200), nn.ELU(), nn.Linear(200, 200), nn.ELU(), nn.Linear(200, 784)
    ).to(device)
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-3)
    examples, started = 0, time.perf_counter()
    for _ in range(epochs):
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


def lab_inner_loop(decoder: nn.Module, x: torch.Tensor, steps: int) -> float:
    config = InnerLoopConfig(max_steps=steps, lr=0.05, tol=-1e9)  # never stops early: exactly K steps
    posterior = LocalPosterior(x.shape[0], 50, config).to(x.device)
    started = time.perf_counter()
    for begin in range(0, x.shape[0], 100):
        idx = torch.arange(begin, min(begin + 100, x.shape[0]), device=x.device)
        stats = posterior.update(decoder, x[idx], idx)
    stats["inner_steps"].sum().item()
    return x.shape[0] / (time.perf_counter() - started)


def textbook_inner_loop(decoder: nn.Module, x: torch.Tensor, steps: int) -> float:
    """Lecture 004 as written: for each datapoint, its own parameters and optimizer."""
    decoder.requires_grad_(False)
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
    decoder.requires_grad_(True)
    loc.sum().item()
    return x.shape[0] / (time.perf_counter() - started)


Measure = Callable[[], float]


def compare(name: str, unit: str, ours: Measure, theirs: Measure, rounds: int) -> None:
    ours(), theirs()  # warm-up: allocator, kernels, caches
    results: dict[str, list[float]] = {"lab": [], "reference": []}
    for _ in range(rounds):
        results["lab"].append(ours())
        results["reference"].append(theirs())
    best_ours, best_theirs = max(results["lab"]), max(results["reference"])
    for side, values in results.items():
        print(f"    {side:9s} {' '.join(f'{v:9.1f}' for v in values)}  {unit}")
    ratio = best_ours / best_theirs
    print(f"{name}: lab {best_ours:.1f} vs reference {best_theirs:.1f} {unit}, ratio {ratio:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-train", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--inner-points", type=int, default=1000, help="points for the lab's inner loop")
    parser.add_argument("--textbook-points", type=int, default=50, help="points for the textbook loop")
    parser.add_argument("--inner-steps", type=int, default=20)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")

    compare(
        "(a) amortized training",
        "examples/s",
        lambda: lab_amortized(args.num_train, args.epochs, args.device),
        lambda: reference_amortized(args.num_train, args.epochs, device),
        args.rounds,
    )
    model_config = load_config(ROOT / "configs" / "local.yaml").model
    x = load_data(load_config(ROOT / "configs" / "local.yaml").data, device).x["train"]
    decoder = build_decoder(model_config, 784, (1, 28, 28)).to(device)
    compare(
        f"(b) local inner loop, K={args.inner_steps}",
        "points/s",
        lambda: lab_inner_loop(decoder, x[: args.inner_points], args.inner_steps),
        lambda: textbook_inner_loop(decoder, x[: args.textbook_points], args.inner_steps),
        args.rounds,
    )


if __name__ == "__main__":
    main()
