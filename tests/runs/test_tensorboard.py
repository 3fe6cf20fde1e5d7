"""What a real `tensorboard` server shows of a log root: the HParams tab across runs (every
run's hyperparameters, what differs, booleans as booleans, the evaluated gaps as metrics,
each session's true status), the scalars and the evaluation figures, read through its
HTTP API as the browser reads them."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from vi_lab.cli import main
from vi_lab.config import load_config
from vi_lab.evaluation.evaluate import evaluate_run
from vi_lab.evaluation.figures import evaluation_title
from vi_lab.runs.board import EXPERIMENT_FILE
from vi_lab.train import train

TINY = ["progress=false", "train.epochs=1", "data.synthetic.num_points=700", "train.batch_size=100"]
EVAL = ["num_points=20", "num_samples=50"]


class TensorBoard:
    """`tensorboard --logdir ROOT` on a free localhost port, stopped on exit."""

    def __init__(self, logdir: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir)]
        self.process = subprocess.Popen(
            [*command, "--port", str(self.port), "--host", "127.0.0.1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def get(self, path: str, body: dict | None = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        url = f"http://127.0.0.1:{self.port}{path}"
        headers = {"Content-Type": "application/json"}  # the hparams routes read a JSON body
        with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=30) as response:
            return json.loads(response.read())

    def poll(self, path: str, body: dict | None, ready: Callable[[Any], bool], timeout: float = 60.0) -> Any:
        """The first answer to `path` for which `ready` holds: the server loads the runs in the
        background, so it answers before it has read everything."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.process.stderr.read()
            try:
                answer = self.get(path, body)
                if ready(answer):
                    return answer
            except (urllib.error.URLError, ConnectionError):
                pass  # not listening yet
            time.sleep(0.5)
        raise AssertionError(f"tensorboard gave no ready answer to {path} in {timeout} s: {answer}")

    def __enter__(self) -> TensorBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _stop_after_first_epoch(epoch: int, metrics: dict) -> None:
    raise RuntimeError("stopped from outside")


@pytest.fixture(scope="module")
def log_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three linear-Gaussian runs under one root: an amortized run and a per-datapoint run with
    other settings (both evaluated), and a run that failed after its first epoch."""
    root = tmp_path_factory.mktemp("board")
    base = "configs/linear_gaussian.yaml"
    train(load_config(base, [*TINY, "train.lr=0.01"]), root / "amortized")
    local = ["inference.kind=local", "inference.inner.max_steps=5", "train.lr=0.02", "data.download=true"]
    train(load_config(base, [*TINY, *local]), root / "local")
    with pytest.raises(RuntimeError, match="stopped from outside"):
        train(load_config(base, [*TINY, "seed=3"]), root / "failed", on_epoch=_stop_after_first_epoch)
    for name in ("amortized", "local"):
        evaluate_run(root / name, EVAL, progress=False)
    assert main(["board", str(root)]) == 0
    return root


@pytest.mark.slow
def test_tensorboard_server_shows_hparams_across_runs_metrics_and_figures(log_root: Path) -> None:
    gaps = json.loads((log_root / "amortized" / "eval" / "gaps.json").read_text())
    steps = json.loads((log_root / "amortized" / "metrics.json").read_text())["steps"]
    with TensorBoard(log_root) as board:
        request = {"experimentName": "", "includeMetrics": True}
        # ready once the root's experiment is read: it alone has a creation time
        experiment = board.poll("/data/plugin/hparams/experiment", request, lambda e: "timeCreatedSecs" in e)
        # the table ticks the first five of each: the settings that differ, and the evaluated gaps
        names = [info["name"] for info in experiment["hparamInfos"]]
        differing = ["data.download", "inference.inner.max_steps", "inference.kind", "seed", "train.lr"]
        assert names[:5] == differing
        assert len(names) == 5  # the constant ones left out
        metrics = [m["name"]["tag"] for m in experiment["metricInfos"]]
        first = ["amortization_gap", "approximation_gap", "log_px", "inferred_gap", "inference_gap"]
        assert metrics[:5] == [f"eval/test/{key}" for key in first]
        assert "valid/log_px" in metrics[5:]
        infos = {info["name"]: info for info in experiment["hparamInfos"]}
        kind = infos["inference.kind"]
        assert kind["type"] == "DATA_TYPE_STRING" and kind["differs"] is True
        assert sorted(kind["domainDiscrete"]) == ["amortized", "local"]
        lr = infos["train.lr"]
        assert lr["differs"] is True and lr["domainInterval"] == {"minValue": 0.01, "maxValue": 0.02}
        download = infos["data.download"]  # a boolean, and only the local run set it
        assert download["type"] == "DATA_TYPE_BOOL" and download["differs"] is True
        inner = infos["inference.inner.max_steps"]  # integers as integers, their domain in numeric order
        assert (
            inner["domainDiscrete"] == sorted(inner["domainDiscrete"], key=int)
            and "5" in inner["domainDiscrete"]
        )

        gap_tag = "eval/test/amortization_gap"
        request = {"experimentName": "", "startIndex": 0, "sliceSize": 10, "includeMetrics": True}
        request["allowedStatuses"] = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
        request["colParams"] = [{"metric": {"tag": gap_tag}}, {"hparam": "inference.kind"}]

        def loaded(answer: dict) -> bool:  # three sessions, every evaluated gap read
            groups = answer.get("sessionGroups", [])
            tags = [m["name"]["tag"] for g in groups for m in g.get("metricValues", [])]
            return len(groups) == 3 and tags.count(gap_tag) == 1 and tags.count("eval/test/log_px") == 2

        groups = board.poll("/data/plugin/hparams/session_groups", request, loaded)["sessionGroups"]
        assert {group["name"] for group in groups} == {
            "amortized",
            "local",
            "failed",
        }  # "Trial ID": the folder
        sessions = {s["name"]: s for group in groups for s in group["sessions"]}
        assert set(sessions) == {"amortized", "local", "failed"}
        assert sessions["amortized"]["status"] == sessions["local"]["status"] == "STATUS_SUCCESS"
        assert sessions["failed"].get("status", "STATUS_UNKNOWN") == "STATUS_UNKNOWN"  # not success
        (amortized,) = [g for g in groups if g["name"] == "amortized"]
        assert amortized["hparams"]["inference.kind"] == "amortized"
        max_steps = load_config(log_root / "amortized" / "config.yaml").inference.inner.max_steps
        assert amortized["hparams"]["inference.inner.max_steps"] == str(max_steps)  # not "20.0000"
        (gap,) = [m for m in amortized["metricValues"] if m["name"]["tag"] == gap_tag]
        assert gap["value"] == pytest.approx(gaps["amortization_gap"], rel=1e-6)
        (local,) = [g for g in groups if g["name"] == "local"]
        assert gap_tag not in [m["name"]["tag"] for m in local["metricValues"]]  # no encoder, no such gap

        runs = board.get("/data/runs")
        assert sorted(runs) == ["amortized", "failed", "local"]  # the experiment is no run of its own
        tag = "eval/test/approximation_gap"  # one point, at the run's last step beside the curves
        scalars = board.get(f"/data/plugin/scalars/scalars?run=amortized&tag={tag}")
        assert [(step, value) for _, step, value in scalars] == [
            (steps, pytest.approx(gaps["approximation_gap"]))
        ]
        (text,) = board.get("/data/plugin/text/text?run=amortized&tag=eval/test/text_summary")
        assert text["step"] == steps and f"{gaps['approximation_gap']:.2f}" in text["text"]

        images = set(board.get("/data/plugin/images/tags")["amortized"])
        assert {"eval/figures/test_gaps", "eval/figures/test_bounds", "eval/figures/gap_curves"} <= images


def test_one_experiment_per_log_root(log_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`vi-lab board` keeps one experiment record, in the first run's folder: rewriting
    replaces it, and a nested one (a study folder boarded before) or one in the root (as
    earlier versions wrote) is removed, since TensorBoard reads only one."""
    record = (log_root / "amortized" / EXPERIMENT_FILE).read_bytes()
    (log_root / "local" / EXPERIMENT_FILE).write_bytes(record)
    (log_root / "events.out.tfevents.vi_lab.experiment").write_bytes(record)
    assert main(["board", str(log_root)]) == 0
    assert sorted(log_root.rglob("*vi_lab.experiment")) == [log_root / "amortized" / EXPERIMENT_FILE]
    assert main(["board", str(tmp_path / "missing")]) == 2
    capsys.readouterr()
    assert main(["board", str(tmp_path)]) == 0  # no runs: a warning, and nothing written
    assert f"warning: no runs below {tmp_path}" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*vi_lab.experiment"))


def _readable(path: Path) -> Image.Image:
    """A figure at a size to read: about 1200 pixels wide at no less than 150 dpi, drawn."""
    image = Image.open(path)
    assert image.format == "PNG" and image.width >= 1200 and min(image.info["dpi"]) >= 150
    assert len(np.unique(np.asarray(image.convert("L")))) > 2  # drawn, not a blank canvas
    return image


def test_evaluate_writes_figures_as_png(log_root: Path) -> None:
    latest = json.loads((log_root / "amortized" / "eval" / "gaps.json").read_text())
    out = log_root / "amortized" / "eval" / latest["evaluation"]
    for name in ("test_gaps", "test_bounds", "gap_curves", "test_diagnostics"):
        _readable(out / f"{name}.png").close()
    gaps = json.loads((out / "gaps.json").read_text())  # what the evaluation figures say above them
    title = "amortized: test split, N = 20 points, log p(x) by IWAE-50, q: diagonal"
    assert evaluation_title("amortized", gaps) == title


def test_compare_draws_budget_curves(log_root: Path, capsys: pytest.CaptureFixture) -> None:
    figure = log_root / "budget.png"
    runs = [str(log_root / "amortized"), str(log_root / "local")]
    assert main(["compare", *runs, "--figure", str(figure)]) == 0
    assert f"written: {figure}" in capsys.readouterr().out
    with _readable(figure) as image:
        assert image.height > image.width / 2  # two panels, one above the other
