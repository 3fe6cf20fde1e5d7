"""`--resume`: which overrides a resume may make (docs/resume.md), and that they take effect."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vi_lab import train as training
from vi_lab.config import ConfigError, load_config
from vi_lab.runs.checkpoint import load_checkpoint
from vi_lab.runs.resume import may_change

ROOT = Path(__file__).parents[2]


def _config(*overrides: str):
    return load_config(ROOT / "configs" / "smoke.yaml", ["progress=false", *overrides])


def vi_lab(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "vi_lab.cli", *args], cwd=ROOT, capture_output=True, text=True, env=env
    )


@pytest.mark.parametrize(
    ("key", "allowed"),
    [
        ("train.epochs", True),
        ("train.lr", True),
        ("train.log_every", True),
        ("eval.num_points", True),
        ("inference.inner.max_steps", True),
        ("progress", True),
        ("device", True),
        ("train.batch_size", False),
        ("model.hidden", False),
        ("model.latent_dim", False),
        ("inference.kind", False),
        ("data.num_train", False),
        ("seed", False),
    ],
)
def test_resume_rules(key, allowed):
    assert may_change(key) is allowed


def test_resume_applies_a_new_learning_rate_and_records_it(tmp_path):
    run_dir = tmp_path / "run"
    training.train(_config("train.epochs=1"), run_dir)
    training.train(_config("train.epochs=2", "train.lr=0.0001"), run_dir, resume=True)
    state = load_checkpoint(run_dir)
    assert [group["lr"] for group in state["optimizer"]["param_groups"]] == [0.0001]
    assert load_config(run_dir / "config.yaml").train.lr == 0.0001
    (line,) = (run_dir / "resumes.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["step"] == 5
    assert record["changes"] == {"train.epochs": [1, 2], "train.lr": [0.001, 0.0001]}


def test_resume_refuses_a_changed_model_or_fewer_epochs(tmp_path):
    run_dir = tmp_path / "run"
    training.train(_config("train.epochs=2"), run_dir)
    with pytest.raises(ConfigError, match=r"model\.hidden"):
        training.train(_config("model.hidden=[32]"), run_dir, resume=True)
    with pytest.raises(ConfigError, match=r"train\.epochs: the run has already done 2"):
        training.train(_config("train.epochs=1"), run_dir, resume=True)


def test_cli_resume_of_a_finished_run_and_of_a_changed_architecture(tmp_path):
    run_dir = tmp_path / "run"
    done = vi_lab("train", "configs/smoke.yaml", "progress=false", "--run-dir", str(run_dir))
    assert done.returncode == 0, done.stderr
    done = vi_lab("train", "--resume", str(run_dir))  # nothing left to do: the run's summary
    assert done.returncode == 0 and "valid L[q*]" in done.stdout, done.stderr
    done = vi_lab("train", "--resume", str(run_dir), "train.epochs=3", "model.hidden=[32]")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "model.hidden" in done.stderr and len(done.stderr.strip().splitlines()) == 1
