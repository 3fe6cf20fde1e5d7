"""The `vi-lab` command: a thin layer over `train`, `evaluate_run` and friends.

Each subcommand parses its arguments and calls one library function; errors that
come from the user's input are printed as one clear line, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vi_lab.checkpoint import FILENAME, load_checkpoint
from vi_lab.config import ConfigError, from_dict, load_config, override
from vi_lab.evaluate import compare_runs, evaluate_run, format_table
from vi_lab.fashion_mnist import DataFileError
from vi_lab.training import NonFiniteLossError, default_run_dir, train

USER_ERRORS = (ConfigError, DataFileError, FileNotFoundError, FileExistsError, ValueError, NonFiniteLossError)


def _train(args: argparse.Namespace) -> None:
    if args.resume:
        run_dir = Path(args.resume)
        config = override(from_dict(load_checkpoint(run_dir / FILENAME)["config"]), args.items)
    else:
        if not args.items:
            raise ConfigError("give a config file, e.g. `vi-lab train configs/smoke.yaml`")
        config = load_config(args.items[0], args.items[1:])
        run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(config)
    metrics = train(config, run_dir, resume=bool(args.resume))
    print(
        f"{run_dir}: train ELBO {metrics['train_elbo']:.2f}, valid ELBO {metrics['valid_elbo']:.2f} "
        f"({metrics['valid_inference']}), {metrics['epochs']} epochs in {metrics['seconds']:.1f} s, "
        f"{metrics['examples_per_second']:.0f} examples/s"
    )


def _evaluate(args: argparse.Namespace) -> None:
    summary = evaluate_run(args.run_dir, args.overrides)
    print(format_table([summary], [Path(args.run_dir).name]))
    print(f"\nwritten: {Path(args.run_dir) / 'eval' / 'gaps.json'}")


def _compare(args: argparse.Namespace) -> None:
    print(compare_runs(args.run_dirs))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vi-lab", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("train", help="train a decoder, amortized or per-datapoint")
    p.add_argument("items", nargs="*", metavar="CONFIG [key=value ...]", help="config file, then overrides")
    p.add_argument("--run-dir", help="where to write the run (default: runs/{dataset}__{kind}__s{seed}__{time})")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.set_defaults(handler=_train)

    p = commands.add_parser("evaluate", help="measure amortization and approximation gaps of a run")
    p.add_argument("run_dir")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="eval settings, e.g. num_points=200")
    p.set_defaults(handler=_evaluate)

    p = commands.add_parser("compare", help="side-by-side gap table of evaluated runs (markdown)")
    p.add_argument("run_dirs", nargs="+")
    p.set_defaults(handler=_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except USER_ERRORS as error:
        print(f"vi-lab {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
