"""The `vi-lab` command: a thin layer over `train`, `evaluate_run` and friends.

Each subcommand parses its arguments and calls one library function; errors that
come from the user's input are printed as one clear line, without a traceback (exit
code 2), and a run stopped by SIGINT or SIGTERM exits with 130 or 143 after saving.
Under torchrun (`torchrun --nproc_per_node N -m vi_lab.cli train ...`) every process runs
the command in one process group (`vi_lab.distributed`), and rank 0 prints.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import warnings
from contextlib import nullcontext
from importlib import import_module
from pathlib import Path

from vi_lab import __version__, distributed
from vi_lab.config import ConfigError, config_yaml, from_dict, load_config, override
from vi_lab.data.fashion_mnist import DataFileError
from vi_lab.evaluation.compare import compare_runs
from vi_lab.evaluation.evaluate import evaluate_run, format_table
from vi_lab.experiment import write_experiment_summary
from vi_lab.runs.checkpoint import CheckpointWriteError, load_checkpoint
from vi_lab.runs.folder import check_resumable, default_run_dir
from vi_lab.runs.lock import EVAL_LOCKFILE, FolderLockedError, folder_lock
from vi_lab.runs.stopping import exit_code, signal_of
from vi_lab.train import NonFiniteLossError, train

USER_ERRORS = (
    ConfigError,
    DataFileError,
    FileNotFoundError,
    FileExistsError,
    ValueError,
    NonFiniteLossError,
    CheckpointWriteError,
    FolderLockedError,
)


def _train(args: argparse.Namespace) -> None:
    if args.resume:
        run_dir = Path(args.resume)
        check_resumable(run_dir)
        config = override(from_dict(load_checkpoint(run_dir)["config"]), args.items)
    else:
        if not args.items:
            raise ConfigError("give a config file, e.g. `vi-lab train configs/smoke.yaml`")
        config = load_config(args.items[0], args.items[1:])
        run_dir = default_run_dir(config) if args.run_dir is None else Path(args.run_dir)
    if args.show_config:
        print(config_yaml(config), end="")
        return
    metrics = train(config, run_dir, resume=bool(args.resume))
    if not distributed.is_main():
        return
    print(train_summary(run_dir, metrics))


def train_summary(run_dir: Path, metrics: dict) -> str:
    """The end of `vi-lab train`: the run's clocks told apart, its last validation and what next."""
    gaps = [
        f"{label} {metrics[key]:.2f}"
        for key, label in (
            ("valid_approximation_gap", "approximation gap"),
            ("valid_amortization_gap", "amortization gap"),
            ("row_gap", "row gap (training points)"),
        )
        if key in metrics
    ]
    return (
        f"{run_dir}: {metrics['epochs']} epochs, {metrics['steps']} decoder steps; "
        f"{metrics['train_seconds']:.1f} s in training steps "
        f"({metrics['examples_per_second']:,.0f} examples/s), "
        f"{metrics['seconds']:.1f} s wall time with validation and checkpoints\n"
        f"  train ELBO {metrics['train_elbo']:.2f}; valid L[q*] {metrics['valid_elbo_refined']:.2f}, "
        f"log p(x) {metrics['valid_log_px']:.2f}; " + ", ".join(gaps) + "\n"
        f"next: vi-lab evaluate {run_dir}   (the gaps on held-out points: RUN/eval/)"
    )


def _evaluate(args: argparse.Namespace) -> None:
    if args.show_config:
        config_file = Path(args.run_dir) / "config.yaml"
        if not config_file.is_file():
            raise FileNotFoundError(f"{config_file} does not exist: is {args.run_dir} a run folder?")
        print(config_yaml(override(load_config(config_file).eval, args.overrides)), end="")
        return
    run_dir = Path(args.run_dir)
    one_at_a_time = (run_dir / "config.yaml").is_file() and distributed.is_main()  # not beside another
    with folder_lock(run_dir, "being evaluated", EVAL_LOCKFILE) if one_at_a_time else nullcontext():
        summary = evaluate_run(args.run_dir, args.overrides, overwrite=args.overwrite)
    if not distributed.is_main():
        return
    print(format_table([summary], [Path(args.run_dir).name]))
    out = Path(args.run_dir) / "eval" / summary["evaluation"]
    print(
        f"\nwritten: {out / 'gaps.json'}, points.npz and figures (*.png); its summary also as eval/gaps.json"
    )


def _compare(args: argparse.Namespace) -> None:
    files = {
        "--figure": (args.figure, "a PNG"),
        "--csv": (args.csv, "a CSV"),
        "--json": (args.json, "a JSON"),
    }
    for option, (path, kind) in files.items():
        if path is not None and (Path(path).is_dir() or not Path(path).parent.is_dir()):
            raise FileExistsError(f"{option} {path}: name {kind} file in an existing folder")
    outputs = tuple(path for path in (args.csv, args.json) if path is not None)
    print(compare_runs(args.run_dirs, args.figure, args.eval, outputs))
    for path in (args.figure, *outputs):
        if path is not None:
            print(f"written: {path}")


def _board(args: argparse.Namespace) -> None:
    root = Path(args.root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    path = write_experiment_summary(root)
    if path is None:
        print(f"vi-lab board: warning: no runs below {root}: no HParams experiment written", file=sys.stderr)
        return
    print(f"written: {path} (`tensorboard --logdir {root}`, HParams tab)")


def _runs(args: argparse.Namespace) -> None:
    from vi_lab.runs.listing import format_runs, list_runs

    rows = list_runs(args.root)
    if not rows:
        print(f"vi-lab runs: warning: no run folders (with config.yaml) below {args.root}", file=sys.stderr)
        return
    print(format_runs(rows))


def _study(args: argparse.Namespace) -> None:
    from vi_lab.study.config import load_study_config
    from vi_lab.study.runner import (  # optuna here
        StudyWorkerError,
        TrialHarnessError,
        run_study,
        summarize_study,
    )

    config = load_study_config(args.config, args.overrides)
    if args.show_config:
        print(config_yaml(config), end="")
        return
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

    if not args.ood:
        raise ValueError("--ood must be given at least once, e.g. --ood noise")
    print(format_anomaly(anomaly_run(args.run_dir, args.ood, args.overrides)))
    print(f"\nwritten: {Path(args.run_dir) / 'uses' / 'anomaly.json'}")


def _impute(args: argparse.Namespace) -> None:
    from vi_lab.uses.impute import format_impute, impute_run

    if args.mask is None:
        raise ValueError("--mask must be given, e.g. --mask top")
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


def _command(
    commands: argparse._SubParsersAction, name: str, summary: str, description: str, example: str
) -> argparse.ArgumentParser:
    """A subcommand whose --help gives a paragraph, an example and how to list its settings."""
    return commands.add_parser(
        name,
        help=summary,
        description=textwrap.fill(f"{summary[0].upper()}{summary[1:]}. {description}", 88),
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _show_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--show-config",
        action="store_true",
        help="print every key=value setting, resolved with the ones given, and exit without running",
    )


USES = {  # name: (module, settings class, summary, description, example)
    "gradvar": (
        "gradvar",
        "GradVarConfig",
        "score-function vs reparameterization gradient variance",
        "Measures the mean, variance and signal-to-noise ratio of both estimators of the ELBO's "
        "gradient on one batch and one q, against the exact gradient where it is known "
        "(RUN/uses/gradvar.json).",
        "vi-lab gradvar runs/try num_samples=4 repeats=1000",
    ),
    "sample": (
        "sample",
        "SampleConfig",
        "decode prior samples and latent interpolations to PNG",
        "Decodes z ~ p(z), and straight lines in z between the posterior means of pairs of test "
        "images, into RUN/uses/samples.png, interpolation.png and the run's TensorBoard images.",
        "vi-lab sample runs/try --num 64 num_pairs=6",
    ),
    "anomaly": (
        "anomaly",
        "AnomalyConfig",
        "outlier scores and their AUROC on out-of-distribution sets",
        "Scores test points and out-of-distribution points by KL(q || p(z)), -ELBO and -log p(x) "
        "and reports how well each score separates them (AUROC, RUN/uses/anomaly.json).",
        "vi-lab anomaly runs/try --ood noise --ood classes:7,8,9 num_points=200",
    ),
    "impute": (
        "impute",
        "ImputeConfig",
        "fill in missing pixels by fitting q to the observed ones",
        "Hides pixels of test images, fits q to the observed pixels only and decodes the hidden "
        "ones, against the mean-image baseline (RUN/uses/impute.json and impute.png).",
        "vi-lab impute runs/try --mask top max_steps=500",
    ),
    "embed": (
        "embed",
        "EmbedConfig",
        "posterior means of test points in TensorBoard's projector",
        "Writes the posterior means of test points, labelled with their class and shown by their "
        "image, for TensorBoard's Projector tab (and RUN/uses/embedding.npz).",
        "vi-lab embed runs/try num_points=2000",
    ),
}


def _use(args: argparse.Namespace) -> None:
    """A use's --show-config, or its handler."""
    module, settings, *_ = USES[args.command]
    if args.show_config:
        defaults = getattr(import_module(f"vi_lab.uses.{module}"), settings)()
        print(config_yaml(override(defaults, args.overrides)), end="")
        return
    args.use(args)


def _add_uses_commands(commands: argparse._SubParsersAction) -> None:
    handlers = {
        "gradvar": _gradvar,
        "sample": _sample,
        "anomaly": _anomaly,
        "impute": _impute,
        "embed": _embed,
    }
    parsers = {}
    for name, (_, _, summary, description, example) in USES.items():
        p = parsers[name] = _command(commands, name, summary, description, example)
        p.add_argument("run_dir", metavar="RUN_DIR")
        p.add_argument(
            "overrides", nargs="*", metavar="key=value", help="settings (list them: --show-config)"
        )
        _show_config_flag(p)
        p.set_defaults(handler=_use, use=handlers[name])
    parsers["sample"].add_argument("--num", type=int, help="prior samples (default 64)")
    ood_help = "noise, flip or classes:7,8,9 (repeatable)"
    parsers["anomaly"].add_argument("--ood", action="append", metavar="SPEC", help=ood_help)
    mask_help = "random:0.5 (fraction hidden), top or bottom (half hidden)"
    parsers["impute"].add_argument("--mask", metavar="SPEC", help=mask_help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vi-lab",
        description="Amortized vs per-datapoint variational inference on one decoder, and the gaps "
        "between them. Each command's --help describes it, with an example.",
        epilog="example:\n  vi-lab train configs/smoke.yaml --run-dir runs/try && vi-lab evaluate runs/try",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vi-lab {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(
        commands,
        "train",
        "train a decoder: amortized, semi-amortized or per-datapoint",
        "Trains from a config file (configs/*.yaml hold only what differs from the defaults) with "
        "a.b=value overrides, into a run folder: config.yaml, checkpoints, metrics.json and "
        "TensorBoard events. --resume continues a stopped run from its last checkpoint.",
        "vi-lab train configs/smoke.yaml train.epochs=3 --run-dir runs/try",
    )
    p.add_argument("items", nargs="*", metavar="CONFIG [key=value ...]", help="config file, then overrides")
    p.add_argument("--run-dir", help="the run's folder (default: runs/{dataset}__{kind}__s{seed}__{time})")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    _show_config_flag(p)
    p.set_defaults(handler=_train)

    p = _command(
        commands,
        "evaluate",
        "measure amortization and approximation gaps of a run",
        "Refines q* per held-out point with the decoder frozen and estimates log p(x) (IWAE or "
        "AIS), then writes RUN/eval/NAME/gaps.json, points.npz, figures (PNG), with NAME from the "
        "settings (e.g. test-iwae5000-n1000), a copy of gaps.json as RUN/eval/gaps.json, and "
        "TensorBoard scalars, histograms and figures. Settings are the run's `eval` section.",
        "vi-lab evaluate runs/try num_points=300 estimator=ais",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="eval settings (list them: --show-config)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an evaluation with the same settings")
    _show_config_flag(p)
    p.set_defaults(handler=_evaluate)

    p = _command(
        commands,
        "compare",
        "side-by-side gap table of evaluated runs (markdown)",
        "Prints the training metrics and gaps of evaluated runs side by side (one evaluation that "
        "every run has: --eval names it), paired differences on the same points against the first "
        "run, then validation measures at equal budgets (decoder steps, training seconds, examples "
        "seen); --figure draws those curves, --csv and --json write every figure with its standard "
        "error for use elsewhere. It takes no key=value settings.",
        "vi-lab compare runs/a runs/b --figure runs/budget.png --csv runs/ab.csv",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--figure", metavar="PNG", help="also draw validation curves against steps and seconds")
    p.add_argument(
        "--eval", metavar="NAME", help="the evaluation to compare (RUN/eval/NAME), e.g. test-iwae5000-n1000"
    )
    p.add_argument("--csv", metavar="FILE", help="also write every measure, a row each, with its SE")
    p.add_argument("--json", metavar="FILE", help="also write the whole comparison as JSON")
    p.set_defaults(handler=_compare)

    p = _command(
        commands,
        "board",
        "one TensorBoard HParams experiment for the runs under a folder",
        "Writes ROOT's HParams experiment: the hyperparameters of every run below ROOT, with what "
        "differs between them, and the validation, training and evaluated gaps as metric columns. "
        "Run it for the folder you give `tensorboard --logdir` (a study writes its own). "
        "It takes no key=value settings.",
        "vi-lab board runs && tensorboard --logdir runs",
    )
    p.add_argument("root", metavar="ROOT")
    p.set_defaults(handler=_board)

    p = _command(
        commands,
        "runs",
        "list the run folders under a folder, one line each",
        "Prints each run's inference kind, variational family, data, epochs done of planned, status "
        "(finished; running: written to in the last 10 minutes; stopped), last validation log p(x) and "
        "the evaluations it holds. It takes no key=value settings.",
        "vi-lab runs runs",
    )
    p.add_argument("root", metavar="ROOT")
    p.set_defaults(handler=_runs)

    p = _command(
        commands,
        "study",
        "run (or resume) an Optuna hyperparameter study",
        "Runs trials of a search space over a base config until the study holds n_trials, in "
        "{root}/{name}/ with its storage (SQLite, a journal file for --workers, or PostgreSQL); "
        "re-running the command resumes it.",
        "vi-lab study configs/study/smoke.yaml n_trials=5 --workers 2",
    )
    p.add_argument("config", metavar="STUDY_CONFIG", help="study file, e.g. configs/study/smoke.yaml")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="study settings (list them: --show-config)"
    )
    p.add_argument("--workers", type=int, default=1, help="processes on this machine (journal file storage)")
    p.add_argument(
        "--storage",
        metavar="URL",
        help="shared database, e.g. postgresql+psycopg://user@host/db (default: $VI_LAB_STORAGE, which "
        "keeps a password out of ps and shell history)",
    )
    p.add_argument("--summary", action="store_true", help="only print best trials, trial table, importances")
    _show_config_flag(p)
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
    joined = distributed.init()
    try:
        args.handler(args)
    except USER_ERRORS as error:
        print(f"vi-lab {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        print(f"vi-lab {args.command}: stopped by {signal_of(stop).name}", file=sys.stderr)
        return exit_code(stop)
    finally:
        if joined:
            distributed.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
