"""The row gap of a per-datapoint table: its closed form on the linear-Gaussian model, the
warning when rows lag the decoder, and the default inner loop keeping up with training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.linear_gaussian import error_and_standard_error
from vi_lab import train as training
from vi_lab.config import EvalConfig, InnerLoopConfig, load_config
from vi_lab.data.datasets import load_data
from vi_lab.evaluation.compare import compare_runs
from vi_lab.evaluation.evaluate import evaluate_run
from vi_lab.evaluation.gaps import measure_row_gap
from vi_lab.evaluation.validation import ROW_GAP_LIMIT, exact_row_gap, row_gap_warning
from vi_lab.models.model import build_model

ROOT = Path(__file__).parents[2]
LINEAR = ROOT / "configs" / "linear_gaussian.yaml"
# what every test run measures: the exact row gap every 2 epochs on 100 training rows, one validation
MEASURE = ["progress=false", "train.gaps_every=2", "train.gaps_num_points=100", "train.valid_num_points=50"]


def test_the_exact_row_gap_is_what_refinement_measures() -> None:
    """Rows moved off the closed-form best diagonal q: the exact gap (closed form) equals the
    refined, common-random-numbers estimate of `train/row_gap` within 3 standard errors, and
    rows at the best q have an exact gap of 0."""
    config = load_config(LINEAR, ["inference.kind=local"])
    data = load_data(config.data, torch.device("cpu"))
    model = build_model(config, data)
    x = data.x["train"][:100]
    idx = torch.arange(100)
    with torch.no_grad():
        model.posterior.params[:100] = model.decoder.best_in(model.family, x)
    assert exact_row_gap(model, x) == pytest.approx(0.0, abs=1e-5)
    with torch.no_grad():
        model.posterior.params[:100] += 0.6 * torch.randn(100, model.family.num_params)
    exact = exact_row_gap(model, x)
    torch.manual_seed(0)
    estimate = measure_row_gap(model, x, idx, EvalConfig())
    error, standard_error = error_and_standard_error(estimate, torch.full((100,), exact))
    assert exact > 1.0 and abs(error) < 3 * standard_error + 0.01, (exact, error, standard_error)


def test_the_warning_fires_on_a_large_or_growing_gap_only() -> None:
    assert row_gap_warning(None, 0.5, 0.05, 4) is None
    assert "above 3" in row_gap_warning(None, ROW_GAP_LIMIT + 0.5, 0.2, 4)
    grew = row_gap_warning({"row_gap": 0.8, "row_gap_se": 0.05}, 1.6, 0.1, 6)
    assert "up from 0.80" in grew and "inference.inner.max_steps" in grew and "\n" not in grew
    assert row_gap_warning({"row_gap": 1.5, "row_gap_se": 0.2}, 1.7, 0.2, 6) is None  # within noise
    assert row_gap_warning({"row_gap": 0.4, "row_gap_se": 0.02}, 0.7, 0.03, 6) is None  # small: no lag


def _exact_gaps(metrics: dict) -> list[float]:
    return [e["row_gap_exact"] for e in metrics["history"] if "row_gap_exact" in e]


@pytest.mark.slow
def test_the_default_inner_loop_keeps_up_and_a_small_budget_is_flagged(tmp_path) -> None:
    """configs/linear_gaussian.yaml in local mode with the default inner loop: the exact row gap
    is at most 2 nats over the last half of training and ends no more than 0.5 nats above where
    that half began; nothing warns. The previous defaults (20 steps at 0.05, no halvings) are a
    budget too small to keep up: their rows end far from the optimum, the warning fires, is
    recorded in metrics.json, and `compare` marks the run."""
    config = load_config(LINEAR, ["inference.kind=local", *MEASURE])
    assert config.inference.inner == InnerLoopConfig()
    metrics = training.train(config, tmp_path / "default")
    gaps = _exact_gaps(metrics)
    last_half = gaps[len(gaps) // 2 :]
    assert len(gaps) == 10 and max(last_half) <= 2.0 and gaps[-1] <= last_half[0] + 0.5, gaps
    assert metrics["warnings"] == []

    small = ["inference.inner.max_steps=20", "inference.inner.lr=0.05", "inference.inner.num_decays=0"]
    config = load_config(LINEAR, ["inference.kind=local", *MEASURE, *small])
    lagging = training.train(config, tmp_path / "small")
    assert _exact_gaps(lagging)[-1] > 2.0 and lagging["warnings"], _exact_gaps(lagging)
    on_disk = json.loads((tmp_path / "small" / "metrics.json").read_text())
    assert on_disk["warnings"] == lagging["warnings"] and "rows lag the decoder" in on_disk["warnings"][0]
    for run in ("default", "small"):
        evaluate_run(tmp_path / run, ["num_points=50", "num_samples=100"], progress=False)
    table = compare_runs([tmp_path / "default", tmp_path / "small"])
    row = next(line for line in table.splitlines() if line.startswith("| rows lag the decoder"))
    assert row.split("|")[2].strip() == "—" and "⚠ epochs" in row.split("|")[3], row
