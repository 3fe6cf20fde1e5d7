"""`make gpu-check`: one prepared pass over every CUDA path, results to one folder.

1. Every mode (amortized, semi-amortized, per-datapoint) with every variational family
   (diagonal, full, flow) trains one short epoch of configs/smoke.yaml on the device in bf16
   autocast (`runtime.precision=bf16`; the per-datapoint runs also with `runtime.compile=true`,
   a CUDA graph of the inner-loop step), then is evaluated in all three families.
2. The tests that take a device (`DEVICES` in tests/linear_gaussian.py holds "cuda" there).
3. The bench rows of `throughput` and `families` (one round, a short amortized epoch).
Everything is written to OUT: gpu_check.md (the summary), gpu_check.json and the logs.
Sized to stay under 8 minutes on one GPU; `--device cpu` is a dry run of the script itself.

Run: python -m benchmarks.gpu_check --out DIR [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
KINDS = ("amortized", "semi_amortized", "local")
FAMILIES = ("diagonal", "full", "flow")
SHORT = [
    "train.epochs=1",
    "data.num_train=500",
    "train.valid_num_points=50",
    "train.valid_num_samples=100",
    "progress=false",
]


def _run(command: list[str], log: Path, timeout: float) -> tuple[int, float]:
    """Run `command` in the repo root, its output to `log`; (exit code, seconds)."""
    started = time.perf_counter()
    with log.open("w") as out:
        try:
            code = subprocess.run(
                command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            code = 124
    return code, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    out = args.out
    (out / "logs").mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "vi_lab.cli"]
    gpu = args.device.startswith("cuda")
    results: dict[str, dict] = {}
    for kind in KINDS:
        for family in FAMILIES:
            name = f"{kind}-{family}"
            run_dir = out / "runs" / name
            settings = [
                *SHORT,
                f"device={args.device}",
                f"inference.kind={kind}",
                f"inference.family={family}",
            ]
            if gpu:
                settings.append("runtime.precision=bf16")
            if gpu and kind == "local":
                settings.append("runtime.compile=true")
            code, seconds = _run(
                [*cli, "train", "configs/smoke.yaml", *settings, "--run-dir", str(run_dir)],
                out / "logs" / f"{name}.train.log",
                240,
            )
            entry: dict = {"train_exit": code, "train_seconds": round(seconds, 1)}
            if code == 0:
                metrics = json.loads((run_dir / "metrics.json").read_text())
                entry.update(
                    valid_log_px=metrics["valid_log_px"], examples_per_second=metrics["examples_per_second"]
                )
                evaluate = [
                    *cli,
                    "evaluate",
                    str(run_dir),
                    "num_points=50",
                    "num_samples=500",
                    "families=[diagonal,full,flow]",
                ]
                code, seconds = _run(evaluate, out / "logs" / f"{name}.evaluate.log", 240)
                entry.update(evaluate_exit=code, evaluate_seconds=round(seconds, 1))
                if code == 0:
                    gaps = json.loads((run_dir / "eval" / "gaps.json").read_text())
                    entry["elbo_refined"] = {f: v["elbo_refined"] for f, v in gaps["families"].items()}
                    entry["log_px"] = gaps["log_px"]
            results[name] = entry
            print(name, entry, flush=True)
    test_log = out / "logs" / "device_tests.log"
    code, seconds = _run(
        [sys.executable, "-m", "pytest", "-q", "-k", "cuda or device", "-p", "no:cacheprovider"],
        test_log,
        240,
    )
    results["device_tests"] = {
        "exit": code,
        "seconds": round(seconds, 1),
        "tail": test_log.read_text().strip().splitlines()[-1:],
    }
    bench_log = out / "logs" / "bench.log"
    bench = [sys.executable, "-m", "benchmarks.run_all", "--only", "throughput", "families", "--rounds", "1"]
    bench += [
        "--num-train",
        "10000",
        "--amortized-rounds",
        "1",
        "--step-rounds",
        "2",
        f"--device={args.device}",
    ]
    code, seconds = _run(bench, bench_log, 300)
    results["bench"] = {"exit": code, "seconds": round(seconds, 1)}
    (out / "gpu_check.json").write_text(json.dumps(results, indent=1))
    lines = [
        "| run | train | evaluate | valid log p(x) | L[q*] diagonal / full / flow |",
        "|---|---|---|---|---|",
    ]
    for name, entry in results.items():
        if "train_exit" not in entry:
            continue
        refined = entry.get("elbo_refined", {})
        bounds = " / ".join(f"{refined[f]:.2f}" for f in FAMILIES if f in refined) or "—"
        log_px = f"{entry['valid_log_px']:.2f}" if "valid_log_px" in entry else "—"
        exits = f"exit {entry['train_exit']} | exit {entry.get('evaluate_exit', '—')}"
        lines.append(f"| {name} | {exits} | {log_px} | {bounds} |")
    lines += [
        "",
        f"device tests: exit {results['device_tests']['exit']}: {results['device_tests']['tail']}",
        "",
    ]
    lines += [f"bench (exit {code}):", bench_log.read_text()]
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
