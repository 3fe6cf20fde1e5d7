"""What a run shows as it goes: progress bars off with progress=false or TQDM_DISABLE and drawn
on a terminal only, the validation phase labelled there, and a line per epoch and per
validation in a log."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from vi_lab import train as training
from vi_lab.config import load_config
from vi_lab.evaluation.evaluate import evaluate_run

ROOT = Path(__file__).parents[1]
BAR = "from vi_lab.progress import progress_bar\nfor _ in progress_bar(range(3), desc='bar'): pass\n"


TINY = ["configs/linear_gaussian.yaml", "data.synthetic.num_points=700", "train.batch_size=100"]


def _stderr_of_bar(env: dict[str, str], terminal: bool, args: tuple[str, ...] = ("-c", BAR)) -> str:
    """Run python with `args` (a 3-step bar) in a subprocess whose stderr is a terminal (a pty)
    or a pipe."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    env = {**clean, "PYTHONPATH": str(ROOT), **env}
    if not terminal:
        return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True).stderr
    main, replica = pty.openpty()
    fcntl.ioctl(replica, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # 80 columns
    process = subprocess.Popen([sys.executable, *args], env=env, stderr=replica, cwd=ROOT)
    os.close(replica)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait()
    os.close(main)
    return b"".join(chunks).decode()


@pytest.mark.parametrize(
    ("env", "terminal", "drawn"),
    [({}, True, True), ({}, False, False), ({"TQDM_DISABLE": "1"}, True, False)],
)
def test_bar_only_on_a_terminal_and_not_when_disabled(env, terminal, drawn):
    output = _stderr_of_bar(env, terminal)
    assert ("bar: 100%" in output) is drawn, output
    assert "\r" not in output or terminal


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_evaluate_refine_bar_follows_the_runs_progress_setting(tmp_path, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    for progress, drawn in [("false", False), ("true", True)]:
        run_dir = tmp_path / progress
        config = load_config(ROOT / "configs" / "smoke.yaml", ["train.epochs=1", f"progress={progress}"])
        training.train(config, run_dir)
        terminal = _Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        evaluate_run(run_dir, ["num_points=20", "num_samples=10", "batch_size=10"])
        monkeypatch.undo()
        assert ("refine" in terminal.getvalue()) is drawn


def test_off_a_terminal_train_prints_a_line_per_epoch_and_per_validation(tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "vi_lab", "train", *TINY, "train.epochs=3", "train.valid_every=2"]
    done = subprocess.run(
        [*command, "--run-dir", str(run_dir)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    history = json.loads((run_dir / "metrics.json").read_text())["history"]
    number = r"(-?[0-9.]+)"
    epochs = re.findall(
        rf"^run epoch (\d)/3 step (\d+): train ELBO {number} \({number} s\)$", done.stdout, re.M
    )
    assert [(int(e), int(s), float(elbo)) for e, s, elbo, _ in epochs] == [
        (h["epoch"], h["step"], round(h["train_elbo"], 2)) for h in history
    ]
    valid = re.findall(
        rf"^run epoch (\d)/3 step \d+: valid log p\(x\) {number}, L\[q\*\] {number} on 50 points",
        done.stdout,
        re.M,
    )
    assert [(int(e), float(log_px)) for e, log_px, _ in valid] == [
        (h["epoch"], round(h["valid_log_px"], 2)) for h in history if "valid_log_px" in h
    ] and len(valid) == 2  # epochs 2 and 3 (the last)
    summary = done.stdout.splitlines()[-3:]
    assert "s in training steps" in summary[0] and "s wall time" in summary[0]
    assert "approximation gap" in summary[1] and summary[2].startswith(f"next: vi-lab evaluate {run_dir}")
    assert "\r" not in done.stdout + done.stderr  # no bar in a log


def test_on_a_terminal_the_validation_phase_is_labelled(tmp_path):
    args = ("-m", "vi_lab", "train", *TINY, "train.epochs=1", "--run-dir", str(tmp_path / "run"))
    output = _stderr_of_bar({}, True, args)
    assert "run: validating 50 points" in output, output
