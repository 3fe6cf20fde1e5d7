"""The `vi-lab` command: a thin layer over `train`, `evaluate_run` and friends.

Each subcommand parses its arguments and calls one library function; errors that
come from the user's input are printed as one clear line, without a traceback (exit
code 2), and a run stopped by SIGINT or SIGTERM exits with 130 or 143 after saving.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from vi_lab.config import ConfigError, from_dict, load_config, override
from vi_lab.data.fashion_mnist import DataFileError
from vi_lab.evaluation.evaluate import compare_runs, evaluate_run, format_table
from vi_lab.runs.checkpoint import load_checkpoint
from vi_lab.runs.folder import default_run_dir
from vi_lab.runs.stopping import exit_code, signal_of
from vi_lab.train import NonFiniteLossError, train

USER_ERRORS = (ConfigError, DataFileError, FileNotFoundError, FileExistsError, ValueError, NonFiniteLossError)


def _train(args: argparse.Namespace) -> None:
    if args.resume:
        run_dir = Path(args.resume)
        config = override(from_dict(load_checkpoint(run_dir)["config"]), args.items)
    else:
        if not args.items:
            raise ConfigError("give a config file, e.g. `vi-lab train configs/smoke.yaml`")
        config = load_config(args.items[0], args.items[1:])
        run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(config)
    metrics = train(config, run_dir, resume=bool(args.resume))
    print(
        f"{run_dir}: train ELBO {metrics['train_elbo']:.2f}; "
        f"valid L[q*] {metrics['valid_elbo_refined']:.2f}, "
        f"log p(x) {metrics['valid_log_px']:.2f}; {metrics['epochs']} epochs in {metrics['seconds']:.1f} s, "
        f"{metrics['examples_per_second']:.0f} examples/s"
    )


def _evaluate(args: argparse.Namespace) -> None:
    summary = evaluate_run(args.run_dir, args.overrides)
    print(format_table([summary], [Path(args.run_dir).name]))
    print(f"\nwritten: {Path(args.run_dir) / 'eval' / 'gaps.json'}")


def _compare(args: argparse.Namespace) -> None:
    print(compare_runs(args.run_dirs))


def _study(args: argparse.Namespace) -> None:
    from vi_lab.study.config import load_study_config
    from vi_lab.study.runner import (  # optuna here
        StudyWorkerError,
        TrialHarnessError,
        run_study,
        summarize_study,
    )

    config = load_study_config(args.config, args.overrides)
    try:
        if not args.summary:
            run_study(config, workers=args.workers, storage=args.storage)
    except StudyWorkerError as error:
        print(summarize_study(config, storage=args.storage))
        print(f"vi-lab study: error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except TrialHarnessError as error:
        print(f"vi-lab study: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(summarize_study(config, storage=args.storage))


# The uses of a trained run: gradvar, sample, anomaly, impute, embed. Each handler
# imports its module itself, so that `vi-lab train` does not load them.
_SETTINGS_HELP = "settings (e.g. {})"


def _gradvar(args: argparse.Namespace) -> None:
    from vi_lab.uses.gradvar import format_gradvar, gradvar_run

    print(format_gradvar(gradvar_run(args.run_dir, args.overrides)))
    print(f"\nwritten: {Path(args.run_dir) / 'uses' / 'gradvar.json'}")


def _sample(args: argparse.Namespace) -> None:
    from vi_lab.uses.sample import sample_run

    extra = [] if args.num is None else [f"num={args.num}"]
    for path in sample_run(args.run_dir, [*args.overrides, *extra]).values():
        print(f"written: {path}")


def _anomaly(args: argparse.Namespace) -> None:
    from vi_lab.uses.anomaly import anomaly_run, format_anomaly

    print(format_anomaly(anomaly_run(args.run_dir, args.ood, args.overrides)))
    print(f"\nwritten: {Path(args.run_dir) / 'uses' / 'anomaly.json'}")


def _impute(args: argparse.Namespace) -> None:
    from vi_lab.uses.impute import format_impute, impute_run

    summary = impute_run(args.run_dir, args.mask, args.overrides)
    print(format_impute(summary))
    print(f"\nwritten: {Path(args.run_dir) / 'uses' / 'impute.json'} {summary.get('png', '')}")


def _embed(args: argparse.Namespace) -> None:
    from vi_lab.uses.embed import embed_run

    summary = embed_run(args.run_dir, args.overrides)
    print(
        f"{summary['num_points']} {summary['split']} points in {summary['latent_dim']} dimensions: "
        f"{summary['projector_config']} (`tensorboard --logdir {args.run_dir}`, Projector tab)"
    )


def _add_uses_commands(commands: argparse._SubParsersAction) -> None:
    uses = [
        ("gradvar", _gradvar, "score-function vs reparameterization gradient variance", "repeats=500"),
        ("sample", _sample, "decode prior samples and latent interpolations to PNG", "num_pairs=6"),
        ("anomaly", _anomaly, "outlier scores and their AUROC on out-of-distribution sets", "num_points=200"),
        ("impute", _impute, "fill in missing pixels by fitting q to the observed ones", "max_steps=500"),
        ("embed", _embed, "posterior means of test points in TensorBoard's projector", "num_points=2000"),
    ]
    parsers = {}
    for name, handler, help_text, example in uses:
        p = parsers[name] = commands.add_parser(name, help=help_text)
        p.add_argument("run_dir")
        p.add_argument("overrides", nargs="*", metavar="key=value", help=_SETTINGS_HELP.format(example))
        p.set_defaults(handler=handler)
    parsers["sample"].add_argument("--num", type=int, help="prior samples (default 64)")
    ood_help = "noise, flip or classes:7,8,9 (repeatable)"
    parsers["anomaly"].add_argument("--ood", action="append", required=True, metavar="SPEC", help=ood_help)
    mask_help = "random:0.5 (fraction hidden), top or bottom (half hidden)"
    parsers["impute"].add_argument("--mask", required=True, metavar="SPEC", help=mask_help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vi-lab", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("train", help="train a decoder, amortized or per-datapoint")
    p.add_argument("items", nargs="*", metavar="CONFIG [key=value ...]", help="config file, then overrides")
    p.add_argument("--run-dir", help="the run's folder (default: runs/{dataset}__{kind}__s{seed}__{time})")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.set_defaults(handler=_train)

    p = commands.add_parser("evaluate", help="measure amortization and approximation gaps of a run")
    p.add_argument("run_dir")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="eval settings, e.g. num_points=200")
    p.set_defaults(handler=_evaluate)

    p = commands.add_parser("compare", help="side-by-side gap table of evaluated runs (markdown)")
    p.add_argument("run_dirs", nargs="+")
    p.set_defaults(handler=_compare)

    p = commands.add_parser("study", help="run (or resume) an Optuna hyperparameter study")
    p.add_argument("config", metavar="STUDY_CONFIG", help="study file, e.g. configs/study/smoke.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. n_trials=10 root=/tmp/studies")
    p.add_argument("--workers", type=int, default=1, help="processes on this machine (journal file storage)")
    p.add_argument(
        "--storage",
        metavar="URL",
        help="shared database, e.g. postgresql+psycopg://user@host/db (default: $VI_LAB_STORAGE, which "
        "keeps a password out of ps and shell history)",
    )
    p.add_argument("--summary", action="store_true", help="only print best trials, trial table, importances")
    p.set_defaults(handler=_study)
    _add_uses_commands(commands)
    return parser


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse, letting `key=value` words stand after options too (`--run-dir X a.b=1`)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    settings = "items" if hasattr(args, "items") else "overrides"
    stray = [word for word in extra if word.startswith("-") or "=" not in word]
    if stray or (extra and not hasattr(args, settings)):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        setattr(args, settings, [*getattr(args, settings), *extra])
    return args


def _one_line_warning(message: Warning | str, category: type[Warning], *args: object, **kw: object) -> str:
    return f"vi-lab: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    warnings.formatwarning = _one_line_warning
    try:
        args.handler(args)
    except USER_ERRORS as error:
        print(f"vi-lab {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        print(f"vi-lab {args.command}: stopped by {signal_of(stop).name}", file=sys.stderr)
        return exit_code(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
