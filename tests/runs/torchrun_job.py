"""What `test_distributed.py` runs under `torchrun --nproc_per_node 2`: one launch for all checks.

For each inference kind, through the CLI: a full run; the same run trained for one epoch
and resumed for the rest; the same run stopped by SIGINT to rank 1 alone during its third
step (exit code 130 on both ranks) and resumed; an evaluation of the full run. Each rank
saves the model it trained (captured where training wraps it for DistributedDataParallel)
to OUT/{kind}/{run}.rank{r}.pt, so the test can compare the ranks' decoders and tables;
the position of the stopped run's checkpoint goes to OUT/{kind}/stopped.position.json.

    torchrun --standalone --nproc_per_node 2 tests/runs/torchrun_job.py OUT KEY=VALUE ... --eval KEY=VALUE ...
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch

from vi_lab import cli, distributed
from vi_lab import train as training
from vi_lab.runs.checkpoint import load_checkpoint

ROOT = Path(__file__).parents[2]
STOP_AT = 3  # rank 1 signals itself during this step of the stopped run


def main(out: Path, settings: list[str], eval_settings: list[str]) -> None:
    trained: list[torch.nn.Module] = []
    wrap, train_step = distributed.wrap, training.train_step
    steps = {"count": 0, "armed": False}

    def capture(model: torch.nn.Module, rank_local: list[str]) -> torch.nn.Module:
        trained.append(model)
        return wrap(model, rank_local)

    def step_and_signal(*args, **kwargs):
        steps["count"] += 1
        if steps["armed"] and steps["count"] == STOP_AT and distributed.rank() == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return train_step(*args, **kwargs)

    distributed.wrap, training.train_step = capture, step_and_signal
    # Python's SIGINT handler even where the tests run in the background: the shell then
    # hands SIGINT ignored down to torchrun's workers, and training leaves an ignored signal alone
    signal.signal(signal.SIGINT, signal.default_int_handler)
    distributed.init()  # one process group for every command below
    config = str(ROOT / "configs" / "linear_gaussian.yaml")
    for kind in ("local", "amortized"):
        folder, start = out / kind, ["train", config, *settings, f"inference.kind={kind}"]
        resume = ["train", "--resume", "RUN", "train.epochs=2"]
        commands = {
            "full": [([*start, "--run-dir", str(folder / "full")], 0)],
            "split": [([*start, "train.epochs=1", "--run-dir", str(folder / "split")], 0), (resume, 0)],
            "stopped": [([*start, "--run-dir", str(folder / "stopped")], 130), (resume, 0)],
        }
        for name, legs in commands.items():
            for argv, code in legs:
                argv = [str(folder / name) if word == "RUN" else word for word in argv]
                steps.update(count=0, armed=code == 130)
                if cli.main(argv) != code:
                    raise SystemExit(f"vi-lab {' '.join(argv)} did not exit with {code}")
                if code == 130 and distributed.is_main():
                    position = load_checkpoint(folder / name)["position"]
                    (folder / f"{name}.position.json").write_text(json.dumps(position))
            torch.save(trained[-1].state_dict(), folder / f"{name}.rank{distributed.rank()}.pt")
        if cli.main(["evaluate", str(folder / "full"), *eval_settings]) != 0:
            raise SystemExit("vi-lab evaluate failed")
    distributed.close()


if __name__ == "__main__":
    arguments = sys.argv[1:]
    split = arguments.index("--eval")
    main(Path(arguments[0]), arguments[1:split], arguments[split + 1 :])
