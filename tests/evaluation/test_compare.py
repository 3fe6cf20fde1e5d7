"""`vi-lab compare`: evaluations kept under their own names, the one shared evaluation picked,
paired differences on the same points, and validation at budgets that are really equal."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from vi_lab.cli import main
from vi_lab.config import load_config
from vi_lab.evaluation.compare import _warnings, budget_rows, comparison, value_at
from vi_lab.evaluation.evaluate import evaluate_run
from vi_lab.evaluation.stored import run_evaluations
from vi_lab.train import train

ROOT = Path(__file__).parents[2]
TEST = ["num_points=40", "num_samples=100"]  # test-iwae100-n40
VALID_AIS = ["split=valid", "num_points=20", "estimator=ais", "ais.num_steps=10", "ais.num_chains=2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Three one-epoch linear-Gaussian runs, each evaluated on the first 40 test points: `a`
    and `b` (another step size) on the same data, `other` on data drawn with another seed."""
    root = tmp_path_factory.mktemp("compare")
    runs = {}
    for name, extra in (("a", []), ("b", ["train.lr=0.003"]), ("other", ["data.seed=1"])):
        config = load_config(
            ROOT / "configs" / "linear_gaussian.yaml",
            [
                "progress=false",
                "train.epochs=1",
                "data.synthetic.num_points=1400",
                "train.valid_num_points=50",
                *extra,
            ],
        )
        train(config, root / name)
        evaluate_run(root / name, TEST, progress=False)
        runs[name] = root / name
    return runs


def test_a_second_evaluation_keeps_the_first_and_compare_picks_the_shared_one(runs):
    first = json.loads((runs["a"] / "eval" / "gaps.json").read_text())
    second = evaluate_run(runs["a"], VALID_AIS, progress=False)
    assert second["evaluation"] == "valid-ais2x10-n20"
    stored = run_evaluations(runs["a"])
    assert set(stored) == {"test-iwae100-n40", "valid-ais2x10-n20"}
    assert stored["test-iwae100-n40"].summary == first  # untouched by the second evaluation
    assert json.loads((runs["a"] / "eval" / "gaps.json").read_text()) == second  # the latest

    result = comparison([runs["a"], runs["b"]])  # b has only the test evaluation
    assert result["evaluation"] == "test-iwae100-n40"
    assert [run["summary"]["split"] for run in result["runs"]] == ["test", "test"]
    with pytest.raises(ValueError, match="no evaluation 'valid-ais2x10-n20'"):
        comparison([runs["a"], runs["b"]], "valid-ais2x10-n20")


def test_the_same_evaluation_again_is_refused_unless_overwritten(runs, capsys):
    assert main(["evaluate", str(runs["b"]), *TEST]) == 2
    error = capsys.readouterr().err
    assert "--overwrite" in error and "Traceback" not in error
    before = (runs["b"] / "eval" / "test-iwae100-n40" / "points.npz").stat().st_mtime_ns
    evaluate_run(runs["b"], TEST, progress=False, overwrite=True)
    assert (runs["b"] / "eval" / "test-iwae100-n40" / "points.npz").stat().st_mtime_ns != before


def test_runs_without_a_shared_evaluation_are_refused_naming_the_difference(runs, tmp_path):
    lone = tmp_path / "lone"
    shutil.copytree(runs["b"], lone, ignore=shutil.ignore_patterns("eval"))
    evaluate_run(lone, VALID_AIS, progress=False)
    with pytest.raises(ValueError, match="split test vs valid") as refused:
        comparison([runs["b"], lone])
    assert "estimator iwae (100) vs ais (2)" in str(refused.value)
    assert main(["compare", str(runs["b"]), str(lone)]) == 2


def test_paired_differences_on_the_same_points_and_a_refusal_on_other_points(runs):
    result = comparison([runs["a"], runs["b"]], "test-iwae100-n40")
    rows = {row["key"]: row for row in result["paired"]["rows"]}
    assert result["paired"]["against"] == "a" and set(rows) >= {"log_px", "elbo_refined", "approximation_gap"}
    points = [run_evaluations(runs[name])["test-iwae100-n40"].points() for name in ("a", "b")]
    diff = points[1]["log_px"] - points[0]["log_px"]
    assert rows["log_px"]["difference"] == pytest.approx(diff.mean())
    assert rows["log_px"]["se"] == pytest.approx(diff.std(ddof=1) / math.sqrt(40))
    # two decoders of the same data score the same points alike: pairing removes the spread
    # between points, which the unpaired standard error carries
    assert rows["log_px"]["se"] < 0.5 * rows["log_px"]["unpaired_se"]

    refused = comparison([runs["a"], runs["other"]])["paired"]
    assert refused["rows"] == [] and "other points" in refused["refused"]


def test_an_evaluation_written_before_names_is_read_under_its_implied_name(runs, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(runs["b"], old)
    named = old / "eval" / "test-iwae100-n40"
    summary = json.loads((named / "gaps.json").read_text())
    for key in ("evaluation", "points_digest", "init"):
        summary.pop(key)
    (old / "eval" / "gaps.json").write_text(json.dumps(summary))
    shutil.move(named / "points.npz", old / "eval" / "points.npz")
    shutil.rmtree(named)
    assert list(run_evaluations(old)) == ["test-iwae100-n40"]
    result = comparison([runs["a"], old])
    assert "does not record which points" in result["paired"]["refused"]


def _history(num_epochs: int, valid_every: int, steps_per_epoch: int = 550) -> list[dict]:
    """Identical validation curves (a function of the decoder step), validated every
    `valid_every` epochs and at the last; 1 s per 100 steps."""
    history = []
    for epoch in range(1, num_epochs + 1):
        step = epoch * steps_per_epoch
        entry = {"epoch": epoch, "step": step, "train_seconds": step / 100, "examples": 55 * step}
        if epoch % valid_every == 0 or epoch == num_epochs:
            entry["valid_log_px"] = -100.0 - 5000.0 / step
            entry["valid_log_px_se"] = 0.5
        history.append(entry)
    return history


def test_equal_budgets_show_identical_curves_as_identical():
    """A: 10 epochs validated every 5; B: 8 epochs validated every epoch; the same curve.
    Every row shows both runs at the same budget, measured, or interpolated and labelled.
    Negative control: the previous rule (each run's last validation within the smallest
    final budget) showed A at 2750 steps and B at 4400, and B better by 0.68 nats."""
    histories = [_history(10, 5), _history(8, 1)]
    rows = budget_rows(histories, ["A", "B"])
    steps = [row for row in rows if row["clock"] == "step"]
    assert [row["budget"] for row in steps] == [2750, 4400]
    measured, reached = steps
    assert [values["how"] for values in measured["runs"]] == ["measured", "measured"]
    assert measured["runs"][0]["valid_log_px"] == measured["runs"][1]["valid_log_px"]
    assert [values["how"] for values in reached["runs"]] == ["interpolated", "measured"]
    assert reached["runs"][0]["between"] == (2750, 5500)
    for row in rows:  # every clock: the same budget, and nothing shown as measured elsewhere
        for values in row["runs"]:
            if values["how"] == "measured":
                assert values["valid_log_px"] == pytest.approx(-100.0 - 5000.0 / _step_of(row))
    assert {row["clock"] for row in rows} == {"step", "train_seconds", "examples"}

    def previous_rule(history: list[dict], budget: float) -> dict:
        return [e for e in history if "valid_log_px" in e and e["step"] <= budget][-1]

    shown = [previous_rule(h, 4400) for h in histories]
    assert [e["step"] for e in shown] == [2750, 4400]
    assert shown[1]["valid_log_px"] - shown[0]["valid_log_px"] == pytest.approx(0.68, abs=0.01)


def _step_of(row: dict) -> float:
    """The decoder step of a budget on any clock of `_history`."""
    return {"step": 1.0, "train_seconds": 100.0, "examples": 1 / 55}[row["clock"]] * row["budget"]


def test_a_budget_before_a_run_s_first_validation_is_not_measured():
    history = _history(10, 5)
    assert value_at(history, "step", 1000) == {"how": "not measured"}
    values = value_at(history, "step", 4125)  # halfway between 2750 and 5500
    expected = (-100.0 - 5000.0 / 2750 + -100.0 - 5000.0 / 5500) / 2
    assert values["how"] == "interpolated" and values["valid_log_px"] == pytest.approx(expected)
    assert values["valid_log_px_se"] == pytest.approx(0.5)


def test_compare_prints_paired_rows_and_budgets(runs, capsys):
    assert main(["compare", str(runs["a"]), str(runs["b"]), "--eval", "test-iwae100-n40"]) == 0
    out = capsys.readouterr().out
    assert "Evaluation test-iwae100-n40 of every run." in out
    assert "| paired difference, run − a (same points) | difference ± SE | unpaired SE |" in out
    assert re.search(r"\| \*\*decoder steps = \d+\*\* \|", out) and "measured (epoch 1)" in out
    assert "| log p(x), b | " in out


def test_compare_writes_every_measure_to_csv_and_json(runs, tmp_path, capsys):
    """The files hold what the table prints: each run's evaluated means with their standard
    errors, the paired differences with paired and unpaired SE, and the budget rows; a folder
    given as the file is one line and exit 2."""
    table, data = tmp_path / "ab.csv", tmp_path / "ab.json"
    args = ["compare", str(runs["a"]), str(runs["b"]), "--eval", "test-iwae100-n40"]
    assert main([*args, "--csv", str(table), "--json", str(data)]) == 0
    assert f"written: {table}" in capsys.readouterr().out
    result = comparison([runs["a"], runs["b"]], "test-iwae100-n40")
    with table.open(newline="") as handle:
        records = list(csv.DictReader(handle))
    cell = {(r["section"], r["run"], r["measure"]): r for r in records}
    for name in ("a", "b"):
        summary = result["runs"][0 if name == "a" else 1]["summary"]
        row = cell[("evaluation", name, "log_px")]
        assert float(row["value"]) == pytest.approx(summary["log_px"])
        assert float(row["se"]) == pytest.approx(summary["log_px_se"])
    paired = next(r for r in result["paired"]["rows"] if r["key"] == "log_px")
    row = cell[("paired", "b", "log_px")]
    assert float(row["value"]) == pytest.approx(paired["difference"])
    assert float(row["se"]) == pytest.approx(paired["se"]) and float(row["unpaired_se"]) > float(row["se"])
    assert {r["section"] for r in records} == {"training", "evaluation", "paired", "budget"}
    on_disk = json.loads(data.read_text())
    first = result["paired"]["rows"][0]
    assert on_disk["paired"]["rows"][0]["difference"] == pytest.approx(first["difference"])
    assert [run["run"] for run in on_disk["runs"]] == ["a", "b"]
    assert main([*args, "--csv", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_unconverged_refinement_is_warned_recorded_and_marked(runs, tmp_path):
    capped = tmp_path / "capped"
    shutil.copytree(runs["b"], capped)
    with pytest.warns(UserWarning, match="100% of the points hit eval.refine.max_steps"):
        summary = evaluate_run(capped, [*TEST, "refine.max_steps=5"], progress=False, overwrite=True)
    assert summary["refine_capped_fraction"] == 1.0
    (warning,) = comparison([runs["a"], capped])["warnings"]
    assert warning.startswith("capped: 100% of the points hit the refinement's step cap")
    # negative control: the defaults converge on every point, and nothing is marked
    assert comparison([runs["a"], runs["b"]])["warnings"] == []
    assert (
        json.loads((runs["a"] / "eval" / "test-iwae100-n40" / "gaps.json").read_text())[
            "refine_capped_fraction"
        ]
        == 0.0
    )


def test_a_shared_step_schedule_puts_runs_of_different_lengths_at_measured_equal_budgets(tmp_path):
    """Two runs of 1 and 2 epochs (11 steps each), validated every 4 decoder steps besides the
    last epoch: both are validated at steps 4 and 8, and compare shows them there, measured.
    Negative control: with only the last epoch validated, the long run has no measure at
    the short run's end (step 11)."""
    histories = {}
    for epochs, schedule in ((1, 4), (2, 4), (2, 0)):
        config = load_config(
            ROOT / "configs" / "linear_gaussian.yaml",
            [
                "progress=false",
                f"train.epochs={epochs}",
                "train.valid_every=100",
                f"train.valid_every_steps={schedule}",
                "train.valid_num_points=20",
                "data.synthetic.num_points=1400",
            ],
        )
        metrics = train(config, tmp_path / f"{epochs}-{schedule}")
        histories[epochs, schedule] = metrics["history"]
    validated = [e["step"] for e in histories[2, 4] if "valid_log_px" in e]
    assert validated == [4, 8, 12, 16, 20, 22]  # the schedule, and the last epoch's end
    epochs = [e["epoch"] for e in histories[2, 4] if e["step"] in (4, 12)]
    assert epochs == pytest.approx([4 / 11, 1 + 1 / 11], abs=1e-4)  # fractions of an epoch
    assert [e["step"] for e in histories[2, 4] if "train_elbo" in e] == [11, 22]  # epoch ends as before
    for key in ("amortization_gap", "approximation_gap"):  # the gap curves' error bars
        assert all(e[f"valid_{key}_se"] > 0 for e in histories[2, 4] if "valid_log_px" in e)
    rows = budget_rows([histories[1, 4], histories[2, 4]], ["short", "long"])
    steps = [row for row in rows if row["clock"] == "step"]
    assert steps[0]["budget"] == 8 and [v["how"] for v in steps[0]["runs"]] == ["measured", "measured"]

    rows = budget_rows([histories[1, 4], histories[2, 0]], ["short", "epochs only"])
    steps = [row for row in rows if row["clock"] == "step"]
    assert steps[0]["budget"] == 11 and [v["how"] for v in steps[0]["runs"]] == ["measured", "not measured"]


def test_estimator_best_reports_the_tighter_mean_of_both(runs, tmp_path):
    best = tmp_path / "best"
    shutil.copytree(runs["a"], best)
    settings = [*VALID_AIS[:2], "estimator=best", "num_samples=50", *VALID_AIS[3:]]
    summary = evaluate_run(best, settings, progress=False)
    assert summary["evaluation"] == "valid-best50+2x10-n20"
    points = run_evaluations(best)["valid-best50+2x10-n20"].points()
    tighter = "ais" if points["log_px_ais"].mean() > points["log_px_iwae"].mean() else "iwae"
    assert summary["estimator"] == f"best: {tighter}"
    assert np.array_equal(points["log_px"], points[f"log_px_{tighter}"])  # one estimator, not a per-point max
    assert summary["ais_minus_iwae"] == pytest.approx((points["log_px_ais"] - points["log_px_iwae"]).mean())


def _summary(estimator: str, difference: float, se: float) -> dict:
    return {
        "estimator": estimator,
        "ais_minus_iwae": difference,
        "ais_minus_iwae_se": se,
        "refine_num_capped": 0,
        "num_points": 100,
    }


def test_compare_warns_when_iwae_is_looser_for_one_run():
    """AIS − IWAE of 0.96 ± 0.09 against 0.17 ± 0.02 (the issue's Fashion-MNIST figures): warned.
    Negative control: 0.20 ± 0.05 against 0.17 ± 0.02 agree within their errors."""
    amortized = {"run": "amortized", "summary": _summary("best: ais", 0.17, 0.02)}
    local = {"run": "local", "summary": _summary("best: ais", 0.96, 0.09)}
    (warning,) = _warnings([amortized, local])
    assert warning.startswith("AIS − IWAE is 0.17 ± 0.02 for amortized but 0.96 ± 0.09 for local")
    close = {"run": "close", "summary": _summary("best: ais", 0.20, 0.05)}
    assert _warnings([amortized, close]) == []
    other = {"run": "other", "summary": _summary("best: iwae", 0.20, 0.05)}
    (warning,) = _warnings([amortized, other])
    assert warning.startswith("log p(x) comes from different estimators")


def test_init_best_keeps_the_better_start_per_point_and_says_which_won(runs, tmp_path):
    """On the linear-Gaussian model both starts reach the closed-form q* of the family, so each
    wins on some points; the kept L[q*] is that optimum's ELBO (fresh 100-sample estimates,
    within 0.05 nats on average, as refinement from one start)."""
    from vi_lab.runs.folder import load_run

    best = tmp_path / "best_start"
    shutil.copytree(runs["a"], best, ignore=shutil.ignore_patterns("eval"))
    summary = evaluate_run(best, ["num_points=40", "num_samples=50", "init=best"], progress=False)
    assert summary["evaluation"] == "test-iwae50-n40-best"
    wins = summary["init_wins"]
    assert wins["encoder"] + wins["prior"] == 40 and min(wins.values()) > 0
    points = run_evaluations(best)["test-iwae50-n40-best"].points()
    assert points["encoder_start_won"].sum() == wins["encoder"]
    run = load_run(best)
    x = run.data.x["test"][:40]
    decoder, family = run.model.decoder, run.model.family
    optimum = decoder.exact_elbo(x, family, decoder.best_in(family, x)).detach().numpy()
    assert abs((points["elbo_refined"] - optimum).mean()) < 0.05
