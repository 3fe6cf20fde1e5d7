"""The `vi-lab` command as a user runs it, in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import vi_lab as vi_lab_package
from vi_lab.cli import USES, main
from vi_lab.config import TrainConfig, load_config, save_config

ROOT = Path(__file__).parents[1]


def vi_lab(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vi_lab.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("kind", ["amortized", "local"])
def test_smoke_train_evaluate_resume(tmp_path, kind):
    run_dir = tmp_path / kind
    done = vi_lab(
        "train", "configs/smoke.yaml", f"inference.kind={kind}", "progress=false", "--run-dir", str(run_dir)
    )
    assert done.returncode == 0, done.stderr
    assert "valid L[q*]" in done.stdout and "log p(x)" in done.stdout
    done = vi_lab("train", "--resume", str(run_dir), "train.epochs=3")
    assert done.returncode == 0, done.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 15
    done = vi_lab("evaluate", str(run_dir), "num_points=20", "num_samples=100")
    assert done.returncode == 0, done.stderr
    assert "approximation gap" in done.stdout and (run_dir / "eval" / "gaps.json").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "configs/smoke.yaml", "train.batchsize=3"], "train.batchsize"),
        (["train", "configs/smoke.yaml", "inference.kind=foo"], "inference.kind"),
        (["train", "configs/nope.yaml"], "nope.yaml"),
        (["evaluate", "/nonexistent/run"], "checkpoint.pt"),
    ],
)
def test_bad_input_is_one_clear_line(args, message):
    done = vi_lab(*args)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_settings_may_follow_options(tmp_path):
    run_dir = str(tmp_path / "run")
    done = vi_lab("train", "configs/smoke.yaml", "--run-dir", run_dir, "train.epochs=1", "progress=false")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"] == 1
    done = vi_lab("compare", str(tmp_path / "run"), "--bogus")
    assert done.returncode == 2 and "--bogus" in done.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train: {epochs: [1\n", "is not valid YAML"),
        ("- train\n- eval\n", "the top level is a list"),
    ],
)
@pytest.mark.parametrize("command", ["train", "study"])
def test_malformed_yaml_is_one_clear_line(tmp_path, command, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    done = vi_lab(command, str(path))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert message in done.stderr and str(path) in done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_one_clear_line(tmp_path):
    done = vi_lab("train", "configs/smoke.yaml", "device=cuda", "--run-dir", str(tmp_path / "run"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "device" in done.stderr and "CUDA is not available" in done.stderr


def test_late_settings_are_checked_before_work(tmp_path):
    run_dir = tmp_path / "run"
    done = vi_lab("train", "configs/smoke.yaml", "train.epochs=1", "progress=false", f"--run-dir={run_dir}")
    assert done.returncode == 0, done.stderr
    for setting, key in [("ais.num_steps=0", "ais.num_steps"), ("memory_budget_mb=0", "memory_budget_mb")]:
        done = vi_lab("evaluate", str(run_dir), "estimator=ais", setting)
        assert done.returncode == 2 and key in done.stderr and "Traceback" not in done.stderr
    assert not (run_dir / "eval").exists()


@pytest.mark.slow  # a fresh interpreter imports torch: about 5 s on a busy 2-core machine
def test_version_through_python_dash_m():
    done = subprocess.run(
        [sys.executable, "-m", "vi_lab", "--version"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"vi-lab {vi_lab_package.__version__}"


def _help(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as stop:
        main([*args, "--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", ["train", "evaluate", "compare", "board", "study", *USES])
def test_every_command_help_has_a_paragraph_an_example_and_its_settings(capsys, command):
    text = _help(capsys, command)
    usage, description, *_ = text.split("\n\n")
    assert usage.startswith(f"usage: vi-lab {command}")
    assert len(description.split()) >= 15  # a paragraph, not a label
    assert f"example:\n  vi-lab {command} " in text
    if "key=value" in usage:
        assert "--show-config" in text  # how to list the settings
    else:
        assert "no key=value settings" in " ".join(description.split())


def test_show_config_prints_resolved_settings_without_running(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert (
        main(["train", "--show-config", "configs/smoke.yaml", "train.epochs=7", "--run-dir", str(run_dir)])
        == 0
    )
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["train"]["epochs"] == 7 and shown["model"]["latent_dim"] == 8  # override, then the file
    assert shown["train"]["lr"] == TrainConfig().lr  # then the defaults
    assert not run_dir.exists()  # nothing ran

    run_dir.mkdir()
    save_config(load_config("configs/smoke.yaml"), run_dir / "config.yaml")
    assert main(["evaluate", str(run_dir), "num_points=7", "--show-config"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["num_points"] == 7 and shown["num_samples"] == 200  # the run's eval section, overridden
    assert not (run_dir / "eval").exists()

    assert main(["gradvar", str(run_dir), "repeats=9", "--show-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["repeats"] == 9
    assert main(["study", "configs/study/smoke.yaml", "n_trials=5", "--show-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["n_trials"] == 5

    assert main(["train", "--show-config", "configs/smoke.yaml", "train.epochz=7"]) == 2
    assert "train.epochz" in capsys.readouterr().err


def _fake_run(folder: Path) -> Path:
    """A folder that looks like a run to the checks made before any work (nothing is loaded)."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("seed: 0\n")
    (folder / "checkpoint.pt").write_bytes(b"")
    return folder


BASE = ROOT / "configs" / "linear_gaussian.yaml"
BAD_INPUTS = {  # name: (arguments given tmp_path, what the one line must say)
    "yaml python tag": (
        lambda tmp: ["train", _write(tmp / "c.yaml", "seed: !!python/object/apply:os.system [echo hi]\n")],
        "could not determine a constructor for the tag",
    ),
    "yaml duplicate key": (
        lambda tmp: ["train", _write(tmp / "c.yaml", "seed: 1\nseed: 2\n")],
        "found duplicate key seed (line 2",
    ),
    "study space as a list": (
        lambda tmp: ["study", _write(tmp / "s.yaml", f"base: {BASE}\nspace:\n  - train.lr\n")],
        "space: must be a mapping (key: value), not a list",
    ),
    "list where a mapping belongs": (
        lambda tmp: ["train", _write(tmp / "c.yaml", "model:\n  hidden: {a: 1}\n")],
        "model.hidden: must be a list, not a mapping",
    ),
    "run dir under a file": (
        lambda tmp: ["train", str(BASE), "--run-dir", _write(tmp / "file", "") + "/run"],
        "is a file, not a folder",
    ),
    "empty run dir": (lambda tmp: ["train", str(BASE), "--run-dir", ""], "the run folder must be named"),
    "run dir inside a run": (
        lambda tmp: ["train", str(BASE), "--run-dir", str(_fake_run(tmp / "run") / "inner")],
        "lies inside the run folder",
    ),
    "resume of a file": (
        lambda tmp: ["train", "--resume", str(_fake_run(tmp / "run") / "checkpoint.pt")],
        "pass the run folder",
    ),
    "checkpoint.pt a folder": (
        lambda tmp: ["train", "--resume", str(_checkpoint_folder(tmp / "run"))],
        "checkpoint.pt is not a file",
    ),
    "compare figure a folder": (
        lambda tmp: ["compare", str(tmp), "--figure", str(tmp)],
        "--figure",
    ),
    "huge latent_dim": (
        lambda tmp: ["train", str(BASE), "model.latent_dim=100000000000", "--run-dir", str(tmp / "run")],
        "model: the networks need",
    ),
    "overflowing seed": (
        lambda tmp: ["train", str(BASE), "seed=99999999999999999999999"],
        "seed: must lie in",
    ),
    "overflowing data seed": (
        lambda tmp: ["train", str(BASE), "data.seed=99999999999999999999999"],
        "data.seed: must lie in",
    ),
}


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _checkpoint_folder(run_dir: Path) -> Path:
    _fake_run(run_dir)
    (run_dir / "checkpoint.pt").unlink()
    (run_dir / "checkpoint.pt").mkdir()
    return run_dir


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_each_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case):
    arguments, message = BAD_INPUTS[case]
    assert main(arguments(tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "run" / ".lock").exists()  # nothing was started
