"""`vi-lab runs ROOT`: a line per run folder, read back column by column."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from vi_lab.cli import main
from vi_lab.config import load_config
from vi_lab.evaluation.evaluate import evaluate_run
from vi_lab.runs.listing import COLUMNS
from vi_lab.train import train

BASE = "configs/linear_gaussian.yaml"
TINY = ["progress=false", "train.epochs=2", "data.synthetic.num_points=700", "train.batch_size=100"]


def _stop_after_first_epoch(epoch: int, metrics: dict) -> None:
    raise RuntimeError("stopped from outside")


def test_runs_lists_kind_family_data_epochs_status_log_px_and_evaluations(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    train(load_config(BASE, TINY), tmp_path / "done")
    evaluate_run(tmp_path / "done", ["num_points=20", "num_samples=50"], progress=False)
    local = [*TINY, "inference.kind=local", "inference.inner.max_steps=3"]
    for name in ("stopped", "nested/running"):
        with pytest.raises(RuntimeError, match="stopped from outside"):
            train(load_config(BASE, local), tmp_path / name, on_epoch=_stop_after_first_epoch)
    an_hour_ago = time.time() - 3600
    for path in (tmp_path / "stopped").rglob("*"):
        os.utime(path, (an_hour_ago, an_hour_ago))

    capsys.readouterr()  # training's lines
    assert main(["runs", str(tmp_path)]) == 0
    header, *rows = [re.split(r"\s{2,}", line) for line in capsys.readouterr().out.splitlines()]
    assert header == list(COLUMNS)
    table = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    assert list(table) == ["done", "nested/running", "stopped"]
    log_px = json.loads((tmp_path / "done" / "metrics.json").read_text())["valid_log_px"]
    assert table["done"] == {
        "run": "done",
        "kind": "amortized",
        "family": "diagonal",
        "data": "linear_gaussian",
        "epochs": "2/2",
        "status": "finished",
        "valid log p(x)": f"{log_px:.2f}",
        "evaluations": "test iwae-50 n20",
    }
    for name, status in (("stopped", "stopped"), ("nested/running", "running")):
        assert table[name]["kind"] == "local" and table[name]["epochs"] == "1/2"
        assert table[name]["status"] == status and table[name]["evaluations"] == "—"


def test_runs_on_a_folder_without_runs_warns(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["runs", str(tmp_path)]) == 0
    assert "warning: no run folders" in capsys.readouterr().err
    assert main(["runs", str(tmp_path / "missing")]) == 2
