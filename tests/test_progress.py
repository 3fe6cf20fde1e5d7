"""Progress bars: off with progress=false or TQDM_DISABLE, and drawn on a terminal only."""

from __future__ import annotations

import fcntl
import io
import os
import pty
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


def _stderr_of_bar(env: dict[str, str], terminal: bool) -> str:
    """Run a 3-step bar in a subprocess whose stderr is a terminal (a pty) or a pipe."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    env = {**clean, "PYTHONPATH": str(ROOT), **env}
    if not terminal:
        return subprocess.run([sys.executable, "-c", BAR], env=env, capture_output=True, text=True).stderr
    main, replica = pty.openpty()
    fcntl.ioctl(replica, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # 80 columns
    process = subprocess.Popen([sys.executable, "-c", BAR], env=env, stderr=replica)
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
