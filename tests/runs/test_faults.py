"""Fault injection: signals mid-write, corrupt checkpoints, NaN, kill -9 leftovers.

What survives which fault is listed in the README ("What survives a fault"); the resume
rules in docs/resume.md. Signals are sent inside subprocesses, from the write callback that
torch's zip writer calls, so they land mid-checkpoint deterministically.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from vi_lab import train as training
from vi_lab.config import load_config
from vi_lab.evaluation.evaluate import evaluate_run
from vi_lab.inference import objectives
from vi_lab.runs.checkpoint import (
    CheckpointError,
    CheckpointFallbackWarning,
    load_checkpoint,
    save_checkpoint,
)

ROOT = Path(__file__).parents[2]
SMOKE = ["configs/smoke.yaml", "progress=false"]

# Runs the CLI with torch.save writing through a file whose 3rd write sends `SIGNAL` to this
# process, during the first checkpoint write only (the end of epoch 1). SIGINT gets Python's
# terminal behaviour (KeyboardInterrupt) even when the test runner was started in the
# background, where the shell hands its children SIGINT ignored.
INJECT = """
import os, signal, sys, torch
from vi_lab.cli import main
signal.signal(signal.SIGINT, signal.default_int_handler)
real_save, sent = torch.save, []
class Signalling:
    def __init__(self, file):
        self.file, self.writes = file, 0
    def write(self, data):
        self.writes += 1
        if self.writes == 3 and not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGNAL)
        return self.file.write(data)
    def __getattr__(self, name):
        return getattr(self.file, name)
torch.save = lambda obj, file, *args, **kwargs: real_save(obj, Signalling(file), *args, **kwargs)
sys.exit(main(sys.argv[1:]))
"""


def _run_with_signal(name: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", INJECT.replace("SIGNAL", name), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def _config(*overrides: str):
    return load_config(ROOT / "configs" / "smoke.yaml", ["progress=false", *overrides])


@pytest.mark.parametrize(("name", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_signal_during_checkpoint_write_keeps_the_epoch(tmp_path, name, code):
    run_dir = tmp_path / "run"
    done = _run_with_signal(name, "train", *SMOKE, "--run-dir", str(run_dir))
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr and f"stopped by {name}" in done.stderr
    assert f"interrupted by {name}: checkpoint saved at step 5" in done.stdout
    state = load_checkpoint(run_dir)
    assert state["position"]["epoch"] == 1 and state["position"]["step"] == 5
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and len(state["history"]) == 1  # metrics.json and checkpoint agree
    assert not list(run_dir.glob(".checkpoint.pt.*"))  # no temp file left behind
    metrics = training.train(_config(), run_dir, resume=True)
    assert metrics["epochs"] == 2 and metrics["steps"] == 10


def test_signal_stops_a_study_worker(tmp_path):
    """The trial that got the signal is FAIL without an error (replaced on resume); no next trial."""
    import optuna

    done = _run_with_signal(
        "SIGINT", "study", "configs/study/smoke.yaml", f"root={tmp_path}", "overrides.train.epochs=2"
    )
    assert done.returncode == 130, done.stderr
    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{tmp_path / 'smoke' / 'study.db'}")
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.FAIL and "error" not in trial.user_attrs
    assert load_checkpoint(tmp_path / "smoke" / "trial_0000")["position"]["epoch"] == 1


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_unreadable_checkpoint_falls_back_to_the_previous_one(tmp_path, damage):
    run_dir = tmp_path / "run"
    training.train(_config(), run_dir)
    path = run_dir / "checkpoint.pt"
    data = path.read_bytes()
    damaged = {"truncated": data[: len(data) // 2], "empty": b"", "garbage": b"not a zip" * 99}
    path.write_bytes(damaged[damage])
    with pytest.warns(CheckpointFallbackWarning, match="checkpoint.prev.pt"):
        assert load_checkpoint(run_dir)["position"]["epoch"] == 1
    with pytest.warns(CheckpointFallbackWarning):
        metrics = training.train(_config("train.epochs=3"), run_dir, resume=True)
    assert metrics["epochs"] == 3 and [h["epoch"] for h in metrics["history"]] == [1, 2, 3]


def test_no_readable_checkpoint_is_one_line(tmp_path):
    run_dir = tmp_path / "run"
    training.train(_config("train.epochs=1"), run_dir)
    (run_dir / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        load_checkpoint(run_dir)
    for args in (["train", "--resume", str(run_dir)], ["evaluate", str(run_dir)]):
        done = subprocess.run(
            [sys.executable, "-m", "vi_lab.cli", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert "no readable checkpoint" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_checkpoint_file_mode_follows_the_umask(tmp_path):
    run_dir = tmp_path / "run"
    training.train(_config("train.epochs=2"), run_dir)
    umask = os.umask(0)
    os.umask(umask)
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        mode = stat.S_IMODE((run_dir / name).stat().st_mode)
        assert mode == 0o666 & ~umask == stat.S_IMODE((run_dir / "config.yaml").stat().st_mode)


def test_non_finite_validation_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    """The last step of epoch 2 makes the parameters NaN: its loss was finite, its validation is not."""
    run_dir = tmp_path / "run"
    training.train(_config("train.epochs=1"), run_dir)
    real_step = torch.optim.Adam.step

    def poisoning_step(self, *args, **kwargs):
        result = real_step(self, *args, **kwargs)
        if self.state[self.param_groups[0]["params"][0]]["step"] == 10:
            with torch.no_grad():
                for group in self.param_groups:
                    for param in group["params"]:
                        param.fill_(float("nan"))
        return result

    monkeypatch.setattr(torch.optim.Adam, "step", poisoning_step)
    with pytest.raises(training.NonFiniteLossError, match="validation ELBO"):
        training.train(_config("train.epochs=2"), run_dir, resume=True)
    assert load_checkpoint(run_dir)["position"]["epoch"] == 1
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 1


def test_evaluate_refuses_non_finite_parameters(tmp_path):
    run_dir = tmp_path / "run"
    training.train(_config("train.epochs=1"), run_dir)
    state = load_checkpoint(run_dir)
    next(iter(state["model"].values())).fill_(float("nan"))
    save_checkpoint(state, run_dir / "checkpoint.pt")  # a whole file, its digest true: NaN all the same
    with pytest.raises(CheckpointError, match="NaN or infinity"):
        evaluate_run(run_dir, ["num_points=20", "num_samples=10"])
    assert not (run_dir / "eval").exists()


def test_resume_after_kill_purges_orphaned_tensorboard_steps(tmp_path):
    """kill -9 after epoch 2 logged but before its checkpoint: steps 6..10 are logged twice."""
    run_dir = tmp_path / "run"
    training.train(_config("train.epochs=1"), run_dir)
    for name in ("checkpoint.pt", "checkpoint.pt.sha256"):
        shutil.copy(run_dir / name, tmp_path / name)
    training.train(_config("train.epochs=2"), run_dir, resume=True)
    for name in ("checkpoint.pt", "checkpoint.pt.sha256"):  # as if killed before the save
        shutil.copy(tmp_path / name, run_dir / name)
    training.train(_config("train.epochs=2"), run_dir, resume=True)
    events = EventAccumulator(str(run_dir))
    events.Reload()
    for tag in ("train/elbo", "valid/log_px"):
        steps = [event.step for event in events.Scalars(tag)]
        assert steps == sorted(set(steps)), tag


def test_folder_with_leftovers_of_a_failed_start_is_refused(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"

    def broken(*args, **kwargs):
        raise RuntimeError("crash before the first checkpoint")

    monkeypatch.setattr(objectives, "elbo", broken)
    with pytest.raises(RuntimeError, match="crash"):
        training.train(_config(), run_dir)
    assert (run_dir / "config.yaml").is_file() and not (run_dir / "checkpoint.pt").exists()
    with pytest.raises(FileExistsError, match="no checkpoint"):
        training.train(_config(), run_dir)
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1  # no second hparams record


def test_ctrl_c_during_validation_resumes_with_the_whole_epoch(tmp_path, monkeypatch):
    whole = training.train(_config("train.epochs=1"), tmp_path / "whole")
    real_validate = training._validate

    def interrupted(run):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "_validate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        training.train(_config("train.epochs=1"), tmp_path / "split")
    monkeypatch.setattr(training, "_validate", real_validate)
    split = training.train(_config("train.epochs=1"), tmp_path / "split", resume=True)
    assert split["train_elbo"] == pytest.approx(whole["train_elbo"], abs=1e-4)
    assert split["valid_log_px"] == pytest.approx(whole["valid_log_px"], abs=1e-4)
