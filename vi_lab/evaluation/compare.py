"""`vi-lab compare`: evaluated runs side by side, at equal budgets and on the same points.

`comparison` gathers everything into one dict of lists of dicts (a writer can serialize it);
`format_comparison` prints it as markdown tables.
- The runs' training metrics and their shared evaluation (`stored.shared_evaluation`: one
  split, one estimator, one set of points for every run; refused otherwise).
- Paired differences against the first run, where every run was evaluated on the very same
  points (their digest in gaps.json): per point d_i = v_i(run) - v_i(first), mean and
  standard error std(d) / sqrt(n); beside it the unpaired standard error sqrt(se_a^2 +
  se_b^2) that treats the two means as independent. Refused, with the reason, otherwise.
- Validation measures at equal budgets, in decoder steps, training seconds and examples
  seen. A budget at which every run was validated is reported as measured; otherwise at the
  largest budget every run reached, each run's value is interpolated linearly between its
  two neighbouring validations (labelled, with their clocks), or "not measured" where the
  budget precedes its first validation. The standard error of an interpolated value is the
  same interpolation of the two standard errors, an upper bound whatever their correlation.
- Warnings: runs whose refinement hit its step cap on more than `CAPPED_WARNING` of the
  points (their L[q*] is understated); with estimator best, runs whose log p(x) came from
  different estimators, and runs whose AIS − IWAE differences disagree by more than
  `DISAGREEMENT` standard errors of their difference: IWAE's looseness then depends on
  the run, and gaps measured with it are not comparable.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from vi_lab.evaluation.evaluate import CAPPED_WARNING, ROWS, format_table
from vi_lab.evaluation.figures import budget_curves
from vi_lab.evaluation.gaps import FAMILY_KEYS
from vi_lab.evaluation.stored import Evaluation, shared_evaluation
from vi_lab.runs.figures import save_figure

CLOCKS = (  # (history key, label, format of a budget on that clock)
    ("step", "decoder steps", "{:.0f}"),
    ("train_seconds", "training seconds", "{:.0f} s"),
    ("examples", "examples seen", "{:.0f}"),
)
BUDGET_ROWS = [
    ("valid L[q*]", "valid_elbo_refined"),
    ("valid log p(x)", "valid_log_px"),
    ("valid approximation gap", "valid_approximation_gap"),
    ("valid L[q] (encoder)", "valid_elbo_encoder"),
]
PAIRED_ROWS = [
    ("log p(x)", "log_px"),
    ("L[q*] (refined)", "elbo_refined"),
    ("L[q] (encoder)", "elbo_amortized"),
    ("approximation gap", "approximation_gap"),
    ("amortization gap", "amortization_gap"),
    ("inference gap", "inference_gap"),
]


def comparison(run_dirs: list[str | Path], evaluation: str | None = None) -> dict[str, Any]:
    """Everything `vi-lab compare` prints, as plain data: {"evaluation": name, "runs": [...],
    "paired": {...}, "budgets": [...], "warnings": [...]}."""
    run_dirs = [Path(run_dir) for run_dir in run_dirs]
    evaluations = shared_evaluation(run_dirs, evaluation)
    names = [run_dir.name for run_dir in run_dirs]
    training = [json.loads((run_dir / "metrics.json").read_text()) for run_dir in run_dirs]
    runs = [
        {"run": name, "run_dir": str(e.run_dir), "training": metrics, "summary": e.summary}
        for name, e, metrics in zip(names, evaluations, training, strict=True)
    ]
    return {
        "evaluation": evaluations[0].name,
        "runs": runs,
        "paired": paired_differences(evaluations, names),
        "budgets": budget_rows([m["history"] for m in training], names),
        "warnings": _warnings(runs),
    }


def paired_differences(evaluations: list[Evaluation], names: list[str]) -> dict[str, Any]:
    """{"against": first run, "rows": [{"metric", "key", "run", "difference", "se",
    "unpaired_se", "num_points"}, ...], "refused": None} or {"refused": reason, "rows": []}."""
    first = evaluations[0]
    digest = first.summary.get("points_digest")
    for name, e in zip(names, evaluations, strict=True):
        if e.summary.get("points_digest") is None:
            return _refused(f"{name}'s evaluation does not record which points it used (evaluate it again)")
        if e.summary["points_digest"] != digest:
            return _refused(
                f"{name} was evaluated on other points than {names[0]} (same split and number, other "
                "pixel values: another data set, binarization or subset)"
            )
    values = [e.points() for e in evaluations]
    rows = []
    for label, key in PAIRED_ROWS:
        if key not in values[0]:
            continue
        base = values[0][key]
        for name, other in zip(names[1:], values[1:], strict=True):
            if key not in other:
                continue
            diff = other[key] - base  # (n,)
            n = diff.shape[0]
            rows.append(
                {
                    "metric": label,
                    "key": key,
                    "run": name,
                    "difference": float(diff.mean()),
                    "se": float(diff.std(ddof=1) / math.sqrt(n)),
                    "unpaired_se": float(math.sqrt((base.var(ddof=1) + other[key].var(ddof=1)) / n)),
                    "num_points": n,
                }
            )
    return {"against": names[0], "rows": rows, "refused": None}


def _refused(reason: str) -> dict[str, Any]:
    return {"against": None, "rows": [], "refused": reason}


def value_at(history: list[dict[str, Any]], clock: str, budget: float) -> dict[str, Any]:
    """A run's validation measures at `budget` on `clock`: {"how": "measured" | "interpolated"
    | "not measured", "between": (clock before, clock after) when interpolated, and the
    values of BUDGET_ROWS with their `_se`}."""
    validated = [e for e in history if "valid_log_px" in e and clock in e]
    exact = [e for e in validated if e[clock] == budget]
    if exact:
        entry = exact[-1]
        values = {key: entry[key] for key in entry if key.startswith("valid_")}
        return {"how": "measured", "epoch": entry["epoch"], **values}
    before = [e for e in validated if e[clock] < budget]
    after = [e for e in validated if e[clock] > budget]
    if not before or not after:
        return {"how": "not measured"}
    a, b = before[-1], after[0]
    weight = (budget - a[clock]) / (b[clock] - a[clock])
    values = {
        key: (1 - weight) * a[key] + weight * b[key]
        for key in a
        if key.startswith("valid_") and key in b and a[key] is not None and b[key] is not None
    }
    return {"how": "interpolated", "between": (a[clock], b[clock]), **values}


def budget_rows(histories: list[list[dict[str, Any]]], names: list[str]) -> list[dict[str, Any]]:
    """Per clock: the largest budget at which every run was validated (measured), and the
    largest budget every run reached when it lies beyond that (interpolated where a run was
    not validated there). [{"clock", "label", "budget", "runs": [{"run", **value_at}]}]."""
    rows = []
    for clock, label, _ in CLOCKS:
        validated = [{e[clock] for e in h if "valid_log_px" in e and clock in e} for h in histories]
        if not all(validated):
            continue  # a run never validated, or written before this clock was recorded
        common = set.intersection(*validated)
        budgets = [max(common)] if common else []
        reached = min(max(v) for v in validated)
        if reached not in budgets:
            budgets.append(reached)
        for budget in budgets:
            runs = [
                {"run": name, **value_at(h, clock, budget)} for name, h in zip(names, histories, strict=True)
            ]
            rows.append({"clock": clock, "label": label, "budget": budget, "runs": runs})
    return rows


DISAGREEMENT = 2.0  # standard errors


def _warnings(runs: list[dict[str, Any]]) -> list[str]:
    warnings = []
    estimators = {run["run"]: run["summary"]["estimator"] for run in runs}
    if len(set(estimators.values())) > 1:
        listed = ", ".join(f"{name}: {estimator}" for name, estimator in estimators.items())
        warnings.append(f"log p(x) comes from different estimators ({listed}): compare with estimator=ais")
    first = runs[0]["summary"]
    for run in runs[1:]:
        summary = run["summary"]
        if first.get("ais_minus_iwae") is None or summary.get("ais_minus_iwae") is None:
            continue
        spread = math.hypot(first["ais_minus_iwae_se"], summary["ais_minus_iwae_se"])
        if abs(summary["ais_minus_iwae"] - first["ais_minus_iwae"]) > DISAGREEMENT * spread:
            warnings.append(
                f"AIS − IWAE is {first['ais_minus_iwae']:.2f} ± {first['ais_minus_iwae_se']:.2f} for "
                f"{runs[0]['run']} but {summary['ais_minus_iwae']:.2f} ± {summary['ais_minus_iwae_se']:.2f} "
                f"for {run['run']}: IWAE is looser for one of them, so gaps measured with it are not "
                "comparable (use the AIS figures)"
            )
    for run in runs:
        summary = run["summary"]
        capped = summary["refine_num_capped"] / summary["num_points"]
        if capped > CAPPED_WARNING:
            warnings.append(
                f"{run['run']}: {capped:.0%} of the points hit the refinement's step cap "
                "(eval.refine.max_steps): its L[q*] is understated and its approximation gap overstated"
            )
    return warnings


def _cell(values: dict[str, Any], key: str) -> str:
    if values.get(key) is None:
        return "—"
    se = values.get(f"{key}_se")
    return f"{values[key]:.2f}" + (f" ± {se:.2f}" if se is not None else "")


def _how(values: dict[str, Any], form: str) -> str:
    if values["how"] == "measured":
        return f"measured (epoch {values['epoch']})"
    if values["how"] == "interpolated":
        a, b = values["between"]
        return f"interpolated ({form.format(a)}–{form.format(b)})"
    return "not measured"


def format_paired(paired: dict[str, Any]) -> str:
    """Markdown: the paired differences against the first run, or the reason they are refused."""
    if paired["refused"]:
        return f"Paired differences: not computed: {paired['refused']}."
    lines = [
        f"| paired difference, run − {paired['against']} (same points) | difference ± SE | unpaired SE |",
        "|---|---|---|",
    ]
    for row in paired["rows"]:
        lines.append(
            f"| {row['metric']}, {row['run']} | {row['difference']:+.2f} ± {row['se']:.2f} | "
            f"{row['unpaired_se']:.2f} |"
        )
    return "\n".join(lines)


def format_budgets(rows: list[dict[str, Any]], names: list[str]) -> str:
    """Markdown: every budget row of `budget_rows`, one column per run."""
    lines = ["| at an equal budget | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for row in rows:
        form = {clock: form for clock, _, form in CLOCKS}[row["clock"]]
        lines.append(
            f"| **{row['label']} = {form.format(row['budget'])}** | "
            + " | ".join(_how(values, form) for values in row["runs"])
            + " |"
        )
        for label, key in BUDGET_ROWS:
            if any(values.get(key) is not None for values in row["runs"]):
                lines.append(
                    f"| {label} | " + " | ".join(_cell(values, key) for values in row["runs"]) + " |"
                )
    return "\n".join(lines)


def format_comparison(result: dict[str, Any]) -> str:
    """The markdown `vi-lab compare` prints."""
    names = [run["run"] for run in result["runs"]]
    summaries = [run["summary"] for run in result["runs"]]
    training = [run["training"] for run in result["runs"]]
    parts = [
        f"Evaluation {result['evaluation']} of every run.",
        format_table(summaries, names, training),
        format_paired(result["paired"]),
        format_budgets(result["budgets"], names),
    ]
    parts += [f"warning: {warning}" for warning in result["warnings"]]
    return "\n\n".join(parts)


def compare_runs(
    run_dirs: list[str | Path],
    figure: str | Path | None = None,
    evaluation: str | None = None,
    outputs: tuple[str | Path, ...] = (),
) -> str:
    """`format_comparison` of `comparison`; `figure` is a PNG path for the validation curves
    against steps and seconds (`figures.budget_curves`); `outputs` are .json or .csv paths
    (`write_comparison`)."""
    result = comparison(run_dirs, evaluation)
    for path in outputs:
        write_comparison(result, path)
    if figure is not None:
        histories = [run["training"]["history"] for run in result["runs"]]
        save_figure(budget_curves(histories, [run["run"] for run in result["runs"]]), figure)
    return format_comparison(result)


RECORD_FIELDS = (
    *("section", "run", "measure", "value", "se"),
    *("unpaired_se", "num_points", "clock", "budget", "how"),
)
TRAINING_MEASURES = ("epochs", "steps", "train_seconds", "seconds", "examples_per_second", "row_gap")


def comparison_records(result: dict[str, Any]) -> list[dict[str, Any]]:
    """`comparison` as flat rows of RECORD_FIELDS (absent fields None), one measure each:
    section "training" (metrics.json), "evaluation" (gaps.json; a family's as FAMILY/key),
    "paired" (difference against the first run, with its paired and unpaired standard
    errors) and "budget" (validation at an equal budget on a clock: measured or interpolated)."""
    records = []

    def add(section: str, run: str, measure: str, value: Any, se: Any = None, **more: Any) -> None:
        if value is not None:
            records.append(
                {
                    **dict.fromkeys(RECORD_FIELDS),
                    **more,
                    "section": section,
                    "run": run,
                    "measure": measure,
                    "value": value,
                    "se": se,
                }
            )

    for run in result["runs"]:
        name, summary, training = run["run"], run["summary"], run["training"]
        for key in TRAINING_MEASURES:
            add("training", name, key, training.get(key), training.get(f"{key}_se"))
        for key, _ in ROWS:
            add("evaluation", name, key, summary.get(key), summary.get(f"{key}_se"))
        for family, entry in summary.get("families", {}).items():
            for key in FAMILY_KEYS:
                add("evaluation", name, f"{family}/{key}", entry.get(key), entry.get(f"{key}_se"))
    for row in result["paired"]["rows"]:
        add(
            "paired",
            row["run"],
            row["key"],
            row["difference"],
            row["se"],
            unpaired_se=row["unpaired_se"],
            num_points=row["num_points"],
        )
    for row in result["budgets"]:
        for values in row["runs"]:
            for _, key in BUDGET_ROWS:
                add(
                    "budget",
                    values["run"],
                    key,
                    values.get(key),
                    values.get(f"{key}_se"),
                    clock=row["clock"],
                    budget=row["budget"],
                    how=values["how"],
                )
    return records


def write_comparison(result: dict[str, Any], path: str | Path) -> Path:
    """`comparison` to a file: JSON (the whole result) for a .json path, else CSV of
    `comparison_records`."""
    path = Path(path)
    if path.suffix == ".json":
        path.write_text(json.dumps(result, indent=1, default=float) + "\n")
        return path
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RECORD_FIELDS)
        writer.writeheader()
        writer.writerows(comparison_records(result))
    return path
