"""Data-parallel scaling: training examples/s with 1 and with N processes, side by side.

Each measurement is one `torchrun --standalone --nproc_per_node P -m vi_lab.cli train` of
the same run (same global batch, same epochs); its examples/s is rank 0's training clock
(`metrics.json`, validation excluded). Scaling efficiency = (examples/s with P processes)
/ (P x examples/s with 1). Rounds alternate the process counts, so slow drift of a
shared machine hits all alike, and each count's best round is compared. Every round is
printed.

On a CPU every process gets one thread (OMP_NUM_THREADS=1): P processes use P cores, and
gloo carries the gradients. With `--device cuda` each process takes its own GPU (NCCL);
P must not exceed the number of GPUs.

Run: python benchmarks/scaling.py [--procs 1 2] [--rounds R] [--num-train N] [--kinds local amortized]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).parents[1]


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-train", type=int, default=5000)
    parser.add_argument("--kinds", nargs="+", default=["local", "amortized"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.device.startswith("cuda") and max(args.procs) > torch.cuda.device_count():
        parser.error(f"--procs {max(args.procs)} needs as many GPUs; {torch.cuda.device_count()} here")
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"device {args.device}, {os.cpu_count()} CPU cores (load average {load} at the start: other work")
    print(f"competing for them lowers the efficiency), {args.num_train} training points, 1 epoch per round")
    with tempfile.TemporaryDirectory() as folder:
        for kind in args.kinds:
            best: dict[int, float] = {}
            for round_ in range(args.rounds):
                for procs in args.procs:
                    rate = examples_per_second(procs, kind, args.num_train, args.device, Path(folder))
                    best[procs] = max(best.get(procs, 0.0), rate)
                    print(f"  {kind} round {round_ + 1}: {procs} process(es) {rate:8.0f} examples/s")
            base = best[min(args.procs)] / min(args.procs)
            for procs in args.procs:
                rate, efficiency = best[procs], best[procs] / (procs * base)
                print(f"{kind}: {procs} process(es) {rate:8.0f} examples/s, efficiency {efficiency:.2f}")
    print("load average at the end: " + ", ".join(f"{value:.1f}" for value in os.getloadavg()))


if __name__ == "__main__":
    main()
