"""What `test_distributed.py` runs under `torchrun --nproc_per_node 2`: one launch for all checks.

For each inference kind, through the CLI: a full run; the same run trained for one epoch
and resumed for the rest; an evaluation of the full run. Each rank saves the model it
trained (captured where training wraps it for DistributedDataParallel) to
OUT/{kind}/{run}.rank{r}.pt, so the test can compare the ranks' decoders and tables.

    torchrun --standalone --nproc_per_node 2 tests/runs/torchrun_job.py OUT KEY=VALUE ... --eval KEY=VALUE ...
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from vi_lab import cli, distributed

ROOT = Path(__file__).parents[2]


def main(out: Path, settings: list[str], eval_settings: list[str]) -> None:
    trained: list[torch.nn.Module] = []
    wrap = distributed.wrap

    def capture(model: torch.nn.Module, rank_local: list[str]) -> torch.nn.Module:
        trained.append(model)
        return wrap(model, rank_local)

    distributed.wrap = capture
    distributed.init()  # one process group for every command below
    config = str(ROOT / "configs" / "linear_gaussian.yaml")
    for kind in ("local", "amortized"):
        folder, start = out / kind, ["train", config, *settings, f"inference.kind={kind}"]
        commands = {
            "full": [[*start, "--run-dir", str(folder / "full")]],
            "split": [
                [*start, "train.epochs=1", "--run-dir", str(folder / "split")],
                ["train", "--resume", str(folder / "split"), "train.epochs=2"],
            ],
        }
        for name, steps in commands.items():
            for argv in steps:
                if cli.main(argv) != 0:
                    raise SystemExit(f"vi-lab {' '.join(argv)} failed")
            model = trained[-1]
            torch.save(model.state_dict(), folder / f"{name}.rank{distributed.rank()}.pt")
        if cli.main(["evaluate", str(folder / "full"), *eval_settings]) != 0:
            raise SystemExit("vi-lab evaluate failed")
    distributed.close()


if __name__ == "__main__":
    arguments = sys.argv[1:]
    split = arguments.index("--eval")
    main(Path(arguments[0]), arguments[1:split], arguments[split + 1 :])
