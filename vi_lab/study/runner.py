"""Hyperparameter studies with Optuna (Akiba et al. 2019): `vi-lab study STUDY_CONFIG`.

Every trial is an ordinary run of `train(config, run_dir)` in {root}/{name}/trial_{number:04d}/,
its suggested values applied to the base config with `override` and written as the run's
TensorBoard HParams session, which ends with success when the trial completes and with failure
when it is pruned, fails or is stopped (a trial whose worker is killed outright leaves it
open). After its trials, each invocation writes the study folder's one HParams experiment
(`write_experiment_summary`), so TensorBoard's HParams tab compares the trials. The objective is
reported after every epoch, so a pruner can stop a hopeless trial early. Where a study is
stored, and how many workers open it at once, is `storage.py`.

The target. `n_trials` is the study's target, not a per-invocation count: the study is done
when it holds `n_trials` complete or pruned trials. Every worker, on any machine, runs trials
until the complete + pruned + running trials reach the target (Optuna's MaxTrialsCallback
with those states); a trial that starts after its predecessors already fill the target
(two workers deciding at once) is failed unrun with user attr `surplus`, so the target is
met exactly. A trial that fails with an error (user attr `error`, e.g. a NaN loss) does not
count and is replaced by a new one; a worker gives up after `n_trials` such failures, so a
study whose every trial fails still ends. Re-running the same command runs
only what is missing; raise `n_trials=` to extend a study.

Parameters per worker. Trial n draws from its own sampler stream, seeded by (sampler.seed, n)
(`TrialSeededSampler`). Trial numbers are unique within a study on every storage, so workers
on any number of machines never draw the same stream, while one process with a fixed seed
draws the same parameters for the same history, resumed or not.

Stopped trials. A worker that gets SIGINT (Ctrl-C) or SIGTERM saves its trial's checkpoint,
fails the trial without an `error` attr and takes no more trials (exit code 130 or 143);
the trial does not count, so re-running the command replaces it with a new one. A trial
failed by the harness rather than by its parameters (an OSError: its folder exists, the
disk is full) is FAIL with user attr `harness_error`: it does not count either, and the
worker stops with that error (exit code 2) instead of failing trial after trial. The study
folder is bound to its storage and study name (`folder.py`).

Dead workers. A worker killed outright (kill -9, a lost machine) leaves its trial RUNNING,
and it counts toward the target until it is reclaimed: failed, and its parameters queued to
run again (Optuna's RetryHeartbeatStaleTrialCallback, formerly RetryFailedTrialCallback),
with a printed line. On database storages any worker reclaims a trial whose heartbeat has
been silent for `heartbeat.grace_period` seconds (checked before every trial); on every
storage, each invocation reclaims at once the RUNNING trials whose worker (host and pid,
recorded as user attrs) is on this machine and no longer alive.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import socket
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState
from torch.utils.tensorboard import SummaryWriter

from vi_lab.config import Config, override
from vi_lab.experiment import write_experiment_summary
from vi_lab.runs.board import end_session
from vi_lab.runs.stopping import Terminated, exit_code, graceful_stop, signal_of
from vi_lab.study.config import (
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
from vi_lab.study.folder import bind_study_folder, check_study_folder
from vi_lab.study.storage import StorageLocation, in_study_dir, resolve_storage
from vi_lab.train import train

TARGET_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)  # what n_trials counts
HARNESS_EXIT_CODE = 2  # a spawned worker stopped by a TrialHarnessError


class StudyWorkerError(RuntimeError):
    """A worker process died; its trial is marked failed and re-running the command resumes."""


class TargetReached(RuntimeError):
    """A trial created after the study already had n_trials done, running or queued: not run."""


class TrialHarnessError(RuntimeError):
    """A trial failed for a reason outside its parameters (an OSError); the study stops."""


def open_study(
    config: StudyConfig,
    location: StorageLocation,
    *,
    create: bool = False,
    on_stale: Callable[[optuna.Study, FrozenTrial], None] | None = None,
) -> optuna.Study:
    """Load the study (or create it, `create=True`) with the config's sampler and pruner.

    `on_stale` is called for each trial that the heartbeat finds stale (database storages).
    """
    with location.setting_up():
        kwargs: dict[str, Any] = {
            "study_name": config.name,
            "storage": location.open(config.heartbeat, on_stale),
            "sampler": TrialSeededSampler(config.sampler),
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


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """The configured sampler, made afresh for each trial with the seed (sampler.seed, trial number).

    Optuna's samplers keep their random state per process, so processes given equal seeds
    draw equal parameters. Trial numbers are unique within a study on every storage, so
    seeding by them gives every trial its own stream on any number of machines, and the
    same stream whenever the same trial number is drawn again with the same seed. The
    samplers read the study's history from the storage, which is all they share across trials.
    """

    def __init__(self, config: SamplerConfig) -> None:
        self._config = config
        self._samplers: dict[int, optuna.samplers.BaseSampler] = {}

    def _for(self, trial: FrozenTrial) -> optuna.samplers.BaseSampler:
        if trial.number not in self._samplers:
            seed = int(np.random.SeedSequence([self._config.seed, trial.number]).generate_state(1)[0])
            self._samplers[trial.number] = build_sampler(self._config, seed)
        return self._samplers[trial.number]

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, optuna.distributions.BaseDistribution]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        search_space: dict[str, optuna.distributions.BaseDistribution],
    ) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: optuna.distributions.BaseDistribution,
    ) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        sampler = self._for(trial)
        del self._samplers[trial.number]
        sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Nothing to reseed: every trial's stream is fixed by its number."""


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
    """The objective `name` (e.g. valid/log_px) from train's metrics, or its latest history entry."""
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
        if num_ahead(trial.study, trial.number) >= config.n_trials:
            trial.set_user_attr("surplus", True)
            trial.study.stop()
            raise TargetReached(f"not run: {config.n_trials} trials were done, running or queued before it")
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
        except (optuna.TrialPruned, KeyboardInterrupt):  # pruned, or stopped by SIGINT/SIGTERM
            _give_up_session(run_dir)
            raise
        except OSError as error:  # the harness, not the parameters: does not count toward n_trials
            trial.set_user_attr("harness_error", f"{type(error).__name__}: {error}")
            raise TrialHarnessError(f"trial {trial.number}: {error}") from error
        except Exception as error:
            trial.set_user_attr("error", f"{type(error).__name__}: {error}")
            _give_up_session(run_dir)
            raise
        trial.set_user_attr("metrics", {k: v for k, v in metrics.items() if k != "history"})
        return values[0] if len(values) == 1 else values

    return objective


def _give_up_session(run_dir: Path) -> None:
    """End the HParams session of a trial the study gives up (it is never resumed) as a failure."""
    if run_dir.is_dir():
        with SummaryWriter(str(run_dir)) as writer:
            end_session(writer, success=False)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def num_toward_target(study: optuna.Study) -> int:
    """Trials that count toward n_trials: complete, pruned, or running now."""
    return len(study.get_trials(deepcopy=False, states=TARGET_STATES))


def num_ahead(study: optuna.Study, number: int) -> int:
    """Trials before trial `number` that count toward n_trials or are queued to run."""
    trials = study.get_trials(deepcopy=False, states=(*TARGET_STATES, TrialState.WAITING))
    return sum(t.number < number for t in trials)


def reclaimer(config: StudyConfig, verbose: bool) -> Callable[[optuna.Study, FrozenTrial], None]:
    """Called with each trial failed because its worker died: queue its parameters again, and say so."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=config.heartbeat.max_retry)

    silent = f"sent no heartbeat for {config.heartbeat.grace_period} s"

    def reclaim(study: optuna.Study, trial: FrozenTrial, why: str = silent) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry(study, trial)
            retries = len(RetryHeartbeatStaleTrialCallback.retry_history(trial))
        fate = (
            "its parameters are queued to run again"
            if retries < config.heartbeat.max_retry
            else f"not retried again: it ran {retries + 1} times (heartbeat.max_retry)"
        )
        host, pid = trial.user_attrs.get("host", "?"), trial.user_attrs.get("pid", "?")
        _say(verbose, f"reclaimed trial {trial.number:04d}: its worker ({host} pid {pid}) {why}; {fate}")

    return reclaim


def fail_stale_trials(study: optuna.Study, reclaim: Callable[[optuna.Study, FrozenTrial], None]) -> None:
    """Reclaim RUNNING trials whose worker is dead: heartbeat-stale (RDB), or a gone pid on this host.

    The heartbeat check calls the storage's stale-trial callback (`reclaim`); the pid check
    calls `reclaim` itself. Our own pid counts as gone: a fresh invocation runs no trial yet.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = trial.user_attrs.get("pid")
        if trial.user_attrs.get("host") != host or pid is None or (pid != os.getpid() and _alive(pid)):
            continue
        try:
            failed = study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another worker reclaimed it first
        reclaim(study, failed, "is no longer running on this machine")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


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


def work(config: StudyConfig, location: StorageLocation, num_threads: int | None, verbose: bool) -> None:
    """One worker: run trials until the study holds n_trials (on every machine together).

    Module-level so that spawned processes can import it.
    """
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(config, location, on_stale=reclaimer(config, verbose))
    if num_toward_target(study) >= config.n_trials:
        return  # other workers have filled the study
    objective = make_objective(config, base_config(config), progress=num_threads is None)

    errors = []

    def log(study: optuna.Study, trial: FrozenTrial) -> None:
        _say(verbose, _trial_line(config, trial))
        if "harness_error" in trial.user_attrs:
            raise TrialHarnessError(
                f"trial {trial.number} failed outside its parameters: {trial.user_attrs['harness_error']}"
            )
        errors.extend([trial.number] if "error" in trial.user_attrs else [])
        if len(errors) >= config.n_trials:
            study.stop()  # every trial fails: give up rather than loop

    target = MaxTrialsCallback(config.n_trials, states=TARGET_STATES)
    with graceful_stop():  # SIGTERM, in a trial or between trials, stops the worker like Ctrl-C
        study.optimize(objective, catch=(Exception,), callbacks=[log, target])


def _work_in_process(*job: Any) -> None:
    """`work` in a spawned process: a signal or a harness error ends it with one line and its exit code."""
    try:
        work(*job)
    except KeyboardInterrupt as stop:
        print(f"study worker {os.getpid()}: stopped by {signal_of(stop).name}", file=sys.stderr, flush=True)
        sys.exit(exit_code(stop))
    except TrialHarnessError as error:
        print(f"study worker {os.getpid()}: error: {error}", file=sys.stderr, flush=True)
        sys.exit(HARNESS_EXIT_CODE)


def run_study(
    config: StudyConfig, *, workers: int = 1, storage: str | None = None, verbose: bool = True
) -> optuna.Study:
    """Create or resume the study and run trials until it holds `n_trials` that count.

    `workers > 1` spawns that many processes (torch threads split between them) on a
    journal file, or on the database when one is given (`storage`, or $VI_LAB_STORAGE).
    A storage that cannot be opened raises StorageError and leaves no study folder behind.
    """
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, not {workers}")
    location = resolve_storage(config, storage, workers)
    own_file = in_study_dir(location, config)
    check_study_folder(config.study_dir, location, config.name, own_file=own_file)  # before the storage
    if own_file:
        config.study_dir.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    reclaim = reclaimer(config, verbose)
    study = open_study(config, location, create=True, on_stale=reclaim)
    config.study_dir.mkdir(parents=True, exist_ok=True)
    bind_study_folder(config.study_dir, location, config.name, own_file=own_file)
    save_study_config(config, config.study_dir / "study.yaml")
    fail_stale_trials(study, reclaim)
    counted = num_toward_target(study)
    _say(
        verbose,
        f"study {config.name} ({location.describe()}): {counted} of {config.n_trials} trials done or running",
    )
    remaining = config.n_trials - counted
    if remaining <= 0:
        write_experiment_summary(config.study_dir)
        return study
    if workers == 1:
        work(config, location, None, verbose)
        write_experiment_summary(config.study_dir)
        return study
    workers = min(workers, remaining)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cpus // workers)
    _say(verbose, f"{workers} workers, {threads} torch thread(s) each, on {location.describe()}")
    try:
        _spawn([(config, location, threads, verbose)] * workers)
    finally:
        fail_stale_trials(study, reclaim)  # the trials of workers that died are not left RUNNING
    write_experiment_summary(config.study_dir)
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
    harness = [p.name for p in processes if p.exitcode == HARNESS_EXIT_CODE]
    if harness:
        raise TrialHarnessError(
            f"{', '.join(harness)} stopped: a trial failed outside its parameters (see above); "
            "fix the cause and re-run the command to resume"
        )
    if failed:
        raise StudyWorkerError(f"study workers failed: {', '.join(failed)}; re-run the command to resume")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _seconds(trial: FrozenTrial) -> float:
    """Wall time of a trial that ended by itself (an interrupted one ended when it was found)."""
    ended = "error" in trial.user_attrs or "harness_error" in trial.user_attrs
    interrupted = trial.state == TrialState.FAIL and not ended
    return float("nan") if trial.duration is None or interrupted else trial.duration.total_seconds()


def _note(trial: FrozenTrial) -> str:
    if trial.state == TrialState.PRUNED:
        return f"pruned after epoch {trial.last_step}" if trial.last_step is not None else "pruned"
    if trial.state == TrialState.FAIL and trial.user_attrs.get("surplus"):
        return "not run: the study had reached n_trials when it started"
    if trial.state == TrialState.FAIL and "harness_error" in trial.user_attrs:
        return f"harness failure (replaced on resume): {trial.user_attrs['harness_error']}"
    if trial.state == TrialState.FAIL:
        return trial.user_attrs.get("error", "interrupted (stopped from outside; replaced on resume)")
    if trial.state == TrialState.RUNNING:
        host, pid = trial.user_attrs.get("host", "?"), trial.user_attrs.get("pid", "?")
        if host == socket.gethostname() and isinstance(pid, int) and not _alive(pid):
            return f"worker pid {pid} is gone: failed and replaced on the next run"
        return f"running on {host} pid {pid}"
    return ""


IMPORTANCE_TRIALS_PER_PARAM = 5  # fANOVA's forest (Hutter et al. 2014) on fewer trials is mostly noise


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
    needed = IMPORTANCE_TRIALS_PER_PARAM * len(config.space)
    if lines and num_complete < needed:
        lines.append(
            f"  (a rough guide only: {num_complete} complete trials for {len(config.space)} parameters; "
            f"importances settle with about {needed}, {IMPORTANCE_TRIALS_PER_PARAM} per parameter)"
        )
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
        + f"; {states[TrialState.COMPLETE] + states[TrialState.PRUNED]} of n_trials={config.n_trials} done",
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
