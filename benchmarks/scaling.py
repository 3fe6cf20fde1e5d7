"""Data-parallel scaling: training examples/s with P processes against P x one process.

Each measurement is one `torchrun --standalone --nproc_per_node P -m vi_lab.cli train` of
the same run (same global batch, one epoch); its examples/s is rank 0's training clock
(`metrics.json`, validation excluded). Scaling efficiency = (examples/s with P processes)
/ (P x examples/s with 1): the row's ratio, the median over rounds that alternate the
process counts (slow drift of a shared machine hits all alike). No warm-up round: process
start-up is outside the training clock.

On a CPU every process gets one thread (OMP_NUM_THREADS=1): P processes use P cores, and
gloo carries the gradients. On CUDA each process takes its own GPU (NCCL); P must not
exceed the number of GPUs.

Run: python -m benchmarks.run_all --only scaling [--scaling-procs 2] [--scaling-rounds R]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.table import Row
from vi_lab.runtime import resolve_device

ROOT = Path(__file__).parents[1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scaling-procs", type=int, default=2, help="processes compared with one")
    parser.add_argument("--scaling-rounds", type=int, default=2)
    parser.add_argument("--scaling-num-train", type=int, default=3000)
    parser.add_argument("--scaling-kinds", nargs="+", default=["local", "amortized"])


def examples_per_second(procs: int, kind: str, num_train: int, device: str, folder: Path) -> float:
    run_dir = folder / f"{kind}-{procs}-{len(list(folder.iterdir()))}"
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)),
        *("-m", "vi_lab.cli", "train", str(ROOT / "configs" / f"{kind}.yaml"), "--run-dir", str(run_dir)),
        *(f"data.num_train={num_train}", "train.epochs=1", "progress=false", f"device={device}"),
        *("train.valid_num_points=50", "train.valid_num_samples=50", "eval.refine.max_steps=50"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    subprocess.run(command, env=env, check=True, capture_output=True)
    return json.loads((run_dir / "metrics.json").read_text())["examples_per_second"]


def rows(args: argparse.Namespace) -> list[Row]:
    device, procs = resolve_device(args.device).type, args.scaling_procs
    if device == "cuda" and procs > torch.cuda.device_count():
        raise SystemExit(f"--scaling-procs {procs} needs as many GPUs; {torch.cuda.device_count()} here")
    load = os.getloadavg()[0]
    result = []
    with tempfile.TemporaryDirectory() as folder:
        for kind in args.scaling_kinds:
            many, one = [], []
            for _ in range(args.scaling_rounds):
                one.append(examples_per_second(1, kind, args.scaling_num_train, device, Path(folder)))
                many.append(examples_per_second(procs, kind, args.scaling_num_train, device, Path(folder)))
            efficiency = [m / (procs * o) for m, o in zip(many, one, strict=True)]
            result.append(
                Row(
                    f"data-parallel training, {kind}, {procs} processes ({device}; load {load:.1f})",
                    f"{statistics.median(many):.0f} examples/s",
                    f"{procs} x 1 process: {procs * statistics.median(one):.0f} examples/s",
                    statistics.median(efficiency),
                    min(efficiency),
                    max(efficiency),
                    "≈ 1 (efficiency)",
                )
            )
    return result
