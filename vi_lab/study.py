"""Hyperparameter studies with Optuna (Akiba et al. 2019): `vi-lab study STUDY_CONFIG`.

Every trial is an ordinary run of `train(config, run_dir)` in {root}/{name}/trial_{number:04d}/,
its suggested values applied to the base config with `override` and written as the run's
TensorBoard hparams, so TensorBoard's HParams tab compares the trials. The objective is
reported after every epoch, so a pruner can stop a hopeless trial early.

Storage. One process: a SQLite file, study.db, in the study folder. `workers > 1`: spawned
worker processes share a journal file, journal.log (Optuna's JournalFileBackend). A
PostgreSQL/MySQL URL lets workers on several machines share one study.

Resuming. `n_trials` is the study's target, not a per-invocation count: a trial counts once
it is complete, pruned, or failed with an error (user attr `error`). Re-running the same
command runs only what is missing, so an interrupted study resumes and a finished one does
nothing; raise `n_trials=` to extend it. A trial stopped from outside (Ctrl-C, SIGTERM, a
killed worker) is FAIL without an `error` attr, does not count, and so is replaced on
resume; the worker that got the signal saves the trial's checkpoint and takes no more
trials. A trial failed by the harness rather than by its parameters (an OSError: its
folder exists, the disk is full) is FAIL with `harness_error`: it does not count either,
and the study stops with that error. The study folder is bound to its storage and study
name (`study_folder.py`).

Stale trials. A worker killed mid-trial leaves it RUNNING. On RDB storages Optuna's heartbeat
fails it once it is stale (`fail_stale_trials`, run before every trial). On every storage,
each invocation also fails the RUNNING trials whose worker (host and pid, recorded as user
attrs) is on this machine and no longer alive; trials of live workers elsewhere are left alone.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import socket
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import sqlalchemy.engine
import sqlalchemy.exc
import torch
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from vi_lab.config import Config, override
from vi_lab.stopping import Terminated, exit_code, graceful_stop, signal_of
from vi_lab.study_config import (
    OBJECTIVE_KEYS,
    ParamSpec,
    ParamType,
    PrunerConfig,
    PrunerKind,
    SamplerConfig,
    SamplerKind,
    StudyConfig,
    base_config,
    choice_text,
    save_study_config,
    trial_overrides,
)
from vi_lab.study_folder import bind_study_folder
from vi_lab.training import train

SQLITE_FILE = "study.db"
JOURNAL_FILE = "journal.log"
HEARTBEAT_SECONDS = 60  # RDB storages: a RUNNING trial silent for GRACE_SECONDS is failed
GRACE_SECONDS = 180
RDB_BACKENDS = ("sqlite", "postgresql", "mysql")


class StudyWorkerError(RuntimeError):
    """A worker process died; its trial is marked failed and re-running the command resumes."""


class TrialHarnessError(RuntimeError):
    """A trial failed for a reason outside its parameters (an OSError); the study stops."""


@dataclass(frozen=True)
class StorageLocation:
    """Where a study lives: an RDB URL or a journal file. Picklable, for spawned workers."""

    url: str | None = None
    journal: str | None = None

    def open(self) -> BaseStorage:
        if self.journal is not None:
            return JournalStorage(JournalFileBackend(self.journal))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(self.url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS)
        except ImportError as error:
            raise ValueError(
                f"storage {self.describe()}: {error}. Install the database driver, e.g. "
                "`pip install psycopg2-binary` (postgresql://) or `pip install pymysql` (mysql+pymysql://)"
            ) from None

    def describe(self) -> str:
        """The location with any password replaced by ***: safe for logs."""
        if self.journal is not None:
            return f"journal file {self.journal}"
        return sqlalchemy.engine.make_url(self.url).render_as_string(hide_password=True)

    def dashboard_command(self) -> str:
        target = self.journal if self.journal is not None else self.describe()
        return f"optuna-dashboard '{target}'"


def resolve_storage(
    config: StudyConfig, storage: str | None, workers: int, *, existing: bool = False
) -> StorageLocation:
    """`storage` (a database URL) if given, else the study folder's journal or SQLite file.

    A study folder holds one of the two: whichever exists is used, so a study started
    with `--workers` resumes in its journal. `existing=True` requires that it exists.
    """
    if storage:
        try:
            backend = sqlalchemy.engine.make_url(storage).get_backend_name()
        except sqlalchemy.exc.ArgumentError:
            raise ValueError(
                f"--storage {storage!r} is not a database URL (e.g. postgresql://user@host/db)"
            ) from None
        if backend not in RDB_BACKENDS:
            raise ValueError(
                f"--storage: {backend!r} databases are not supported; use one of {list(RDB_BACKENDS)}"
            )
        return StorageLocation(url=storage)
    study_dir = config.study_dir.resolve()
    journal, sqlite = study_dir / JOURNAL_FILE, study_dir / SQLITE_FILE
    if journal.is_file():
        return StorageLocation(journal=str(journal))
    if sqlite.is_file():
        if workers > 1:
            raise ValueError(
                f"{sqlite} was started by one process (SQLite); run it without --workers, "
                "or pass --storage with a PostgreSQL/MySQL URL for parallel workers"
            )
        return StorageLocation(url=f"sqlite:///{sqlite}")
    if existing:
        raise FileNotFoundError(f"no study in {study_dir}: run `vi-lab study` with this config first")
    return (
        StorageLocation(journal=str(journal)) if workers > 1 else StorageLocation(url=f"sqlite:///{sqlite}")
    )


def open_study(
    config: StudyConfig, location: StorageLocation, *, sampler_seed: int | None = None, create: bool = False
) -> optuna.Study:
    """Load the study (or create it, `create=True`) with the config's sampler and pruner."""
    kwargs: dict[str, Any] = {
        "study_name": config.name,
        "storage": location.open(),
        "sampler": build_sampler(
            config.sampler, config.sampler.seed if sampler_seed is None else sampler_seed
        ),
        "pruner": build_pruner(config.pruner, base_config(config).train.epochs),
    }
    if not create:
        try:
            return optuna.load_study(**kwargs)
        except KeyError:
            raise FileNotFoundError(f"no study named {config.name!r} in {location.describe()}") from None
    study = optuna.create_study(directions=config.directions, load_if_exists=True, **kwargs)
    stored = [d.name.lower() for d in study.directions]
    if stored != config.directions:
        raise ValueError(
            f"study {config.name!r} in {location.describe()} optimizes {stored}, the config asks for "
            f"{config.directions}: change `name` to start a new study"
        )
    if not study.metric_names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([o.metric for o in config.objectives])
    return study


def build_sampler(config: SamplerConfig, seed: int) -> optuna.samplers.BaseSampler:
    if config.kind == SamplerKind.tpe:
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=config.n_startup_trials)
    if config.kind == SamplerKind.nsgaii:
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def build_pruner(config: PrunerConfig, epochs: int) -> optuna.pruners.BasePruner:
    """Steps are epochs: trials report their objective after each one."""
    if config.kind == PrunerKind.median:
        return optuna.pruners.MedianPruner(
            n_startup_trials=config.n_startup_trials, n_warmup_steps=config.n_warmup_steps
        )
    if config.kind == PrunerKind.successive_halving:
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=config.min_resource, reduction_factor=config.reduction_factor
        )
    if config.kind == PrunerKind.hyperband:
        return optuna.pruners.HyperbandPruner(
            min_resource=config.min_resource, max_resource=epochs, reduction_factor=config.reduction_factor
        )
    return optuna.pruners.NopPruner()


def suggest(trial: optuna.Trial, space: dict[str, ParamSpec]) -> dict[str, Any]:
    """Draw every parameter of the space; categorical lists come back as their JSON text."""
    for key, spec in space.items():
        if spec.type == ParamType.categorical:
            trial.suggest_categorical(key, [choice_text(c) for c in spec.choices])
        elif spec.type == ParamType.int:
            trial.suggest_int(key, int(spec.low), int(spec.high), step=int(spec.step or 1), log=spec.log)
        else:
            trial.suggest_float(key, spec.low, spec.high, step=spec.step, log=spec.log)
    return dict(trial.params)


def metric_value(metrics: dict[str, Any], name: str) -> float | None:
    """The objective `name` (e.g. valid/elbo) from train's metrics, or its latest history entry."""
    key = OBJECTIVE_KEYS[name]
    if metrics.get(key) is not None:
        return float(metrics[key])
    for entry in reversed(metrics.get("history", [])):
        if entry.get(key) is not None:
            return float(entry[key])
    return None


def make_objective(
    config: StudyConfig, base: Config, *, progress: bool = True
) -> Callable[[optuna.Trial], Any]:
    """The function Optuna calls per trial: suggest, train in the trial's folder, return the value(s)."""
    names = [o.metric for o in config.objectives]
    host = socket.gethostname()

    def objective(trial: optuna.Trial) -> float | list[float]:
        run_dir = config.study_dir / f"trial_{trial.number:04d}"
        trial.set_user_attr("host", host)
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("run_dir", str(run_dir))
        params = suggest(trial, config.space)

        def on_epoch(epoch: int, metrics: dict[str, Any]) -> None:
            value = metric_value(metrics, names[0])
            if len(names) > 1 or value is None:
                return  # Optuna cannot prune multi-objective trials
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch}: {names[0]} {value:.4g}")

        try:
            trial_config = override(
                base, [*trial_overrides(config, params), *([] if progress else ["progress=false"])]
            )
            metrics = train(trial_config, run_dir, on_epoch=on_epoch, hparams=params)
            values = [metric_value(metrics, name) for name in names]
            bad = [name for name, value in zip(names, values, strict=True) if not _finite(value)]
            if bad:
                raise ValueError(f"objective {', '.join(bad)} is missing or not finite: {values}")
        except optuna.TrialPruned:
            raise
        except OSError as error:  # the harness, not the parameters: does not count toward n_trials
            trial.set_user_attr("harness_error", f"{type(error).__name__}: {error}")
            raise TrialHarnessError(f"trial {trial.number}: {error}") from error
        except Exception as error:
            trial.set_user_attr("error", f"{type(error).__name__}: {error}")
            raise
        trial.set_user_attr("metrics", {k: v for k, v in metrics.items() if k != "history"})
        return values[0] if len(values) == 1 else values

    return objective


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def counts_toward_target(trial: FrozenTrial) -> bool:
    """Complete, pruned, or failed with an error; not a trial stopped from outside."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and "error" in trial.user_attrs


def num_taken(study: optuna.Study) -> int:
    """Trials that count toward n_trials, plus those running now."""
    trials = study.get_trials(deepcopy=False)
    return sum(counts_toward_target(t) or t.state == TrialState.RUNNING for t in trials)


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Fail RUNNING trials whose worker is dead: heartbeat-stale (RDB), or a gone pid on this host.

    Returns the numbers of the trials failed by the pid check. Our own pid counts as gone:
    a fresh invocation is running no trial yet.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    host, failed = socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = trial.user_attrs.get("pid")
        if trial.user_attrs.get("host") != host or pid is None or (pid != os.getpid() and _alive(pid)):
            continue
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        failed.append(trial.number)
    return failed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _sampler_seed(seed: int, num_trials: int, worker: int) -> int:
    """A fresh stream per invocation and worker, so a resumed study does not repeat its first draws."""
    return int(np.random.SeedSequence([seed, num_trials, worker]).generate_state(1)[0])


def _say(verbose: bool, message: str) -> None:
    if verbose:
        print(message, flush=True)


def _trial_line(config: StudyConfig, trial: FrozenTrial) -> str:
    state = trial.state.name
    if trial.state == TrialState.COMPLETE:
        values = zip(config.objectives, trial.values, strict=True)
        detail = ", ".join(f"{o.metric} {v:.4g}" for o, v in values)
    else:
        detail = _note(trial)
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
    return f"trial {trial.number:04d} {state}: {detail} | {params} ({_seconds(trial):.1f} s)"


def work(
    config: StudyConfig,
    location: StorageLocation,
    share: int,
    seed: int,
    num_threads: int | None,
    verbose: bool,
) -> None:
    """One worker: run up to `share` trials, stopping early once the study has reached n_trials.

    Module-level so that spawned processes can import it.
    """
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(config, location, sampler_seed=seed)
    objective = make_objective(config, base_config(config), progress=num_threads is None)

    def log(study: optuna.Study, trial: FrozenTrial) -> None:
        _say(verbose, _trial_line(config, trial))
        if "harness_error" in trial.user_attrs:
            raise TrialHarnessError(
                f"trial {trial.number} failed outside its parameters: {trial.user_attrs['harness_error']}"
            )

    with graceful_stop():  # SIGTERM between trials stops the worker too
        for _ in range(share):
            if num_taken(study) >= config.n_trials:
                break  # other machines have filled the study
            study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[log])


def _work_in_process(*job: Any) -> None:
    """`work` in a spawned process: a signal or a harness error ends it with one line and its exit code."""
    try:
        work(*job)
    except KeyboardInterrupt as stop:
        print(f"study worker {os.getpid()}: stopped by {signal_of(stop).name}", file=sys.stderr, flush=True)
        sys.exit(exit_code(stop))
    except TrialHarnessError as error:
        print(f"study worker {os.getpid()}: error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)


def run_study(
    config: StudyConfig, *, workers: int = 1, storage: str | None = None, verbose: bool = True
) -> optuna.Study:
    """Create or resume the study and run trials until it holds `n_trials` that count.

    `workers > 1` spawns that many processes (torch threads split between them) on a
    journal file, or on `storage` when a database URL is given.
    """
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, not {workers}")
    config.study_dir.mkdir(parents=True, exist_ok=True)
    location = resolve_storage(config, storage, workers)
    bind_study_folder(config.study_dir, location.describe(), config.name, own_file=not storage)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(config, location, create=True)
    save_study_config(config, config.study_dir / "study.yaml")
    stale = fail_stale_trials(study)
    if stale:
        _say(verbose, f"marked trials {stale} failed: their worker on this machine is gone")
    taken = num_taken(study)
    remaining = config.n_trials - taken
    _say(
        verbose,
        f"study {config.name} ({location.describe()}): {taken} of {config.n_trials} trials done or running",
    )
    if remaining <= 0:
        return study
    num_trials = len(study.trials)
    shares = [remaining // workers + (i < remaining % workers) for i in range(workers)]
    if workers == 1:
        work(config, location, remaining, _sampler_seed(config.sampler.seed, num_trials, 0), None, verbose)
    else:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = max(1, cpus // workers)
        _say(verbose, f"{workers} workers, {threads} torch thread(s) each, on {location.describe()}")
        jobs = [
            (config, location, share, _sampler_seed(config.sampler.seed, num_trials, i), threads, verbose)
            for i, share in enumerate(shares)
            if share > 0
        ]
        try:
            _spawn(jobs)
        finally:
            fail_stale_trials(study)  # the trials of workers that died are not left RUNNING
    return study


def _spawn(jobs: list[tuple[Any, ...]]) -> None:
    """Run `work` in spawned processes (not forked: torch and its threads do not survive fork)."""
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_work_in_process, args=job, name=f"vi-lab-study-{i}")
        for i, job in enumerate(jobs)
    ]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt as stop:
        # Ctrl-C reaches the whole process group; a SIGTERM (`kill PID`) only this process: pass it on.
        # Each worker saves its checkpoint, fails its trial and takes no more.
        if isinstance(stop, Terminated):
            for process in processes:
                if process.is_alive():
                    process.terminate()
        for process in processes:
            process.join(timeout=60)
        raise
    failed = [f"{p.name} (exit code {p.exitcode})" for p in processes if p.exitcode != 0]
    if failed:
        raise StudyWorkerError(f"study workers failed: {', '.join(failed)}; re-run the command to resume")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _seconds(trial: FrozenTrial) -> float:
    """Wall time of a trial that ended by itself (an interrupted one ended when it was found)."""
    interrupted = trial.state == TrialState.FAIL and "error" not in trial.user_attrs
    return float("nan") if trial.duration is None or interrupted else trial.duration.total_seconds()


def _note(trial: FrozenTrial) -> str:
    if trial.state == TrialState.PRUNED:
        return f"pruned after epoch {trial.last_step}" if trial.last_step is not None else "pruned"
    if trial.state == TrialState.FAIL:
        return trial.user_attrs.get("error", "interrupted (stopped from outside; replaced on resume)")
    if trial.state == TrialState.RUNNING:
        host, pid = trial.user_attrs.get("host", "?"), trial.user_attrs.get("pid", "?")
        if host == socket.gethostname() and isinstance(pid, int) and not _alive(pid):
            return f"worker pid {pid} is gone: failed and replaced on the next run"
        return f"running on {host} pid {pid}"
    return ""


def _importances(study: optuna.Study, config: StudyConfig, num_complete: int) -> list[str]:
    if num_complete < 2:
        return [f"parameter importances: need at least 2 complete trials (have {num_complete})"]
    lines = []
    for i, objective in enumerate(config.objectives):
        target = None if len(config.objectives) == 1 else (lambda t, i=i: t.values[i])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                importances = optuna.importance.get_param_importances(study, target=target)
        except (RuntimeError, ValueError, ZeroDivisionError) as error:
            lines.append(f"parameter importances for {objective.metric}: cannot be computed ({error})")
            continue
        ranked = ", ".join(f"{k} {v:.2f}" for k, v in importances.items())
        lines.append(f"parameter importances for {objective.metric}: {ranked or 'none'}")
    return lines


def summarize_study(config: StudyConfig, *, storage: str | None = None) -> str:
    """Best trial(s), a markdown table of all trials, parameter importances, and how to look further."""
    location = resolve_storage(config, storage, 1, existing=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(config, location)
    trials = study.get_trials(deepcopy=False)
    states = {state: sum(t.state == state for t in trials) for state in TrialState}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    lines = [
        f"study {config.name} ({location.describe()}): {len(trials)} trials, "
        + ", ".join(f"{n} {s.name.lower()}" for s, n in states.items() if n)
        + f"; {sum(map(counts_toward_target, trials))} of n_trials={config.n_trials} done",
        "objectives: " + ", ".join(f"{o.metric} ({o.direction.value})" for o in config.objectives),
        "",
    ]
    best = (study.best_trials if len(config.objectives) > 1 else [study.best_trial]) if complete else []
    label = "Pareto-optimal trials" if len(config.objectives) > 1 else "best trial"
    lines.append(f"{label}:" if best else f"{label}: none yet (no complete trial)")
    for trial in best:
        lines.append(f"  {_trial_line(config, trial)}  {trial.user_attrs.get('run_dir', '')}")

    keys = list(dict.fromkeys([*config.space, *(k for t in trials for k in t.params)]))
    header = ["trial", "state", *(o.metric for o in config.objectives), *keys, "trial s", "note"]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for trial in trials:
        values = trial.values or [None] * len(config.objectives)
        cells = [
            f"{trial.number:04d}",
            trial.state.name.lower(),
            *(_fmt(v) if v is not None else "" for v in values),
            *(_fmt(trial.params[k]) if k in trial.params else "" for k in keys),
            f"{_seconds(trial):.1f}",
            _note(trial).replace("|", "/").splitlines()[0][:80] if _note(trial) else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *_importances(study, config, len(complete)), ""]
    lines.append(f"dashboard:   {location.dashboard_command()}  (pip install optuna-dashboard)")
    lines.append(f"TensorBoard: tensorboard --logdir {config.study_dir}  (HParams tab compares the trials)")
    return "\n".join(lines)
