"""`vi-lab evaluate` and `vi-lab compare`: the gaps of a trained run, on file and on screen.

`evaluate_run` measures the gaps (`gaps.py`) on one split, in the run's own variational
family and those of `eval.families`, and writes RUN/eval/NAME/ (`stored.py` names it after
the settings): gaps.json (means, standard errors, steps and seconds; `families` holds each
family's), points.npz (per-point values, other families' as `key.family`), the figures of
`figures.py` as PNG; a copy of gaps.json as RUN/eval/gaps.json (the latest); and into the run's
TensorBoard: scalars `eval/{split}/...` and `eval/{split}/{family}/...` (metric columns of
the HParams tab) at the run's last step, the table as text `eval/{split}`, histograms of
the per-point gaps and the figures. `format_table` puts
evaluated runs side by side as a markdown table (with Cremer et al.'s table of the families
where more than one was refined); `compare.py` builds `vi-lab compare` on it.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from vi_lab import distributed
from vi_lab.config import FamilyName, override
from vi_lab.evaluation import diagnostics as diagnosing
from vi_lab.evaluation.figures import (
    bound_scatter,
    diagnostics_bars,
    evaluation_title,
    gap_curves,
    gap_histograms,
    posterior_panels,
    training_title,
)
from vi_lab.evaluation.gaps import FAMILY_KEYS, eval_families, measure_gaps
from vi_lab.evaluation.stored import LATEST, clear_folder, evaluation_folder, evaluation_name, points_digest
from vi_lab.runs.board import write_json
from vi_lab.runs.figures import save_figure
from vi_lab.runs.folder import load_run

CAPPED_WARNING = 0.05  # the fraction of points at the refinement's step cap above which a run is marked
ROWS = [
    ("elbo_amortized", "L[q] (encoder)"),
    ("elbo_inferred", "L[q] (posterior's own inference)"),
    ("elbo_refined", "L[q*] (refined)"),
    ("log_px", "log p(x)"),
    ("log_px_exact", "log p(x) exact"),  # closed form, or quadrature for a 2-D latent
    ("amortization_gap", "amortization gap"),
    ("inferred_gap", "gap after own inference"),
    ("approximation_gap", "approximation gap"),
    ("inference_gap", "inference gap"),
    ("ais_minus_iwae", "AIS − IWAE (same points)"),  # estimator best only
]


def evaluate_run(
    run_dir: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Measure and save the gaps of one run; `overrides` are keys of the eval section.

    An evaluation with the same name (`stored.evaluation_name`) is replaced only with
    `overwrite` (else FileExistsError, before any work). Under torchrun the points are shared
    by the ranks (`gaps.measure_gaps`).

    The refinement's progress bar follows the run's `progress` setting (and `progress_bar`'s rules).
    """
    run = load_run(run_dir)  # under torchrun: each rank with its rows of a per-datapoint table
    config = override(run.config.eval, overrides)
    x = run.data.x[config.split][: config.num_points]
    name = evaluation_name(config, x.shape[0], run.model.family.name)
    out = evaluation_folder(run.run_dir, name, overwrite)
    torch.manual_seed(run.config.seed)
    families = eval_families(run.model.family, config.families, run.config.inference)
    report = measure_gaps(run.model, x, config, progress=progress and run.config.progress, families=families)
    summary = {
        "split": config.split,
        **report.summary(),
        "run": str(run.run_dir),
        "kind": run.config.inference.kind.value,
        "binarization": run.data.binarization,  # the fixed pixels evaluation saw
        "init": config.init.value,
        "points_digest": points_digest(x),  # which points: paired comparisons need the same
        "refine_capped_fraction": report.own.capped.float().mean().item(),
        "evaluation": name,  # the folder RUN/eval/NAME
    }
    with torch.no_grad():
        encoder = run.model.posterior.guess(x) if run.model.posterior.amortized else None
    diagnostics = diagnosing.diagnose_posteriors(families[0], encoder, report.own.params)
    summary.update(diagnosing.report(diagnostics))
    for family in families:  # q* of every family refined, the run's own (diagnosed above) first
        refined = report.refined[family.name].params
        diagnosed = diagnostics["refined"] if family is families[0] else diagnosing.diagnose(family, refined)
        summary["families"][family.name].update(diagnosed.summary())
    if not distributed.is_main():  # every rank holds the whole report; rank 0 writes it
        return summary
    if summary["refine_capped_fraction"] > CAPPED_WARNING:
        warnings.warn(
            f"{summary['refine_capped_fraction']:.0%} of the points hit eval.refine.max_steps "
            f"({config.refine.max_steps}) before converging: L[q*] is understated and the approximation "
            "gap overstated; raise eval.refine.max_steps",
            stacklevel=2,
        )

    clear_folder(out)
    write_json(summary, out / "gaps.json")
    write_json(summary, out.parent / LATEST)
    points = {**report.per_point(), **diagnosing.per_point(diagnostics)}
    np.savez(out / "points.npz", **points)
    with SummaryWriter(str(run.run_dir)) as writer:
        for key, _ in ROWS:
            if summary[key] is not None:
                writer.add_scalar(f"eval/{config.split}/{key}", summary[key], run.step)
        for name, entry in summary["families"].items():
            for key in FAMILY_KEYS:
                if entry[key] is not None:
                    writer.add_scalar(f"eval/{config.split}/{name}/{key}", entry[key], run.step)
        for key, value in diagnosing.scalars(diagnostics).items():
            writer.add_scalar(f"eval/{config.split}/diagnostics/{key}", value, run.step)
        # the table as text too: a single evaluated point is easy to miss in a chart
        writer.add_text(f"eval/{config.split}", format_table([summary], [run.run_dir.name]), run.step)
        for key in ("amortization_gap", "approximation_gap"):
            if key in points:
                writer.add_histogram(f"eval/{config.split}/{key}_per_point", points[key], run.step)
        metrics_file = run.run_dir / "metrics.json"
        history = json.loads(metrics_file.read_text())["history"] if metrics_file.is_file() else []
        title = evaluation_title(run.run_dir.name, summary)
        figures = {
            f"{config.split}_gaps": gap_histograms(points, title),
            f"{config.split}_bounds": bound_scatter(points, title),
            "gap_curves": gap_curves(history, training_title(run.run_dir.name, run.config.train)),
            f"{config.split}_diagnostics": diagnostics_bars(summary, title),
        }
        if run.model.decoder.latent_dim == 2:
            qs = (
                {"encoder q": (families[0], run.model.posterior.guess(x))}
                if run.model.posterior.amortized
                else {}
            )
            qs.update(
                {
                    f"q* {name}": (f, report.refined[name].params)
                    for name, f in zip(report.refined, families, strict=True)
                }
            )
            figures[f"{config.split}_posteriors"] = posterior_panels(run.model.decoder, x, qs, title)
        for name, figure in figures.items():
            if figure is not None:
                save_figure(figure, out / f"{name}.png", writer, f"eval/figures/{name}", run.step)
    return summary


def eval_tags(split: str) -> list[str]:
    """The scalar tags `evaluate_run` writes for a split (HParams metric columns)."""
    return [f"eval/{split}/{key}" for key, _ in ROWS]


def _value(metrics: dict[str, Any], key: str) -> str:
    """`mean ± se` (the ± part where the dict has `{key}_se`), or — when there is no value."""
    if metrics.get(key) is None:
        return "—"
    se = metrics.get(f"{key}_se")
    return f"{metrics[key]:.2f}" + (f" ± {se:.2f}" if se is not None else "")


TRAINING_ROWS = [
    ("train ELBO (last epoch)", lambda m: f"{m['train_elbo']:.2f}"),
    ("train ELBO of the encoder's q", lambda m: _value(m, "train_elbo_encoder")),
    ("epochs / decoder steps", lambda m: f"{m['epochs']} / {m['steps']}"),
    (
        "train seconds / examples per s",
        lambda m: f"{m['train_seconds']:.0f} / {m['examples_per_second']:.0f}",
    ),
    ("row gap, training points", lambda m: _value(m, "row_gap")),
    ("row gap, closed form", lambda m: _value(m, "row_gap_exact")),
    ("rows lag the decoder (warned)", lambda m: _lag_epochs(m)),
]


def _lag_epochs(metrics: dict[str, Any]) -> str:
    """The epochs at which training warned that the table's rows lag, or — (none warned)."""
    epochs = [e["epoch"] for e in metrics["history"] if "row_gap_warning" in e]
    return "⚠ epochs " + ", ".join(map(str, epochs)) if epochs else "—"


EVAL_ROWS = [
    ("points", lambda s: f"{s['num_points']} ({s['split']})"),
    ("variational family", lambda s: s.get("family", "diagonal")),
    ("log p(x) estimator", lambda s: f"{s['estimator']} ({s['num_samples']}){_tails(s)}"),
    ("refine steps mean / max", lambda s: f"{s['refine_steps_mean']:.0f} / {s['refine_steps_max']}"),
    ("points at step cap", lambda s: str(s["refine_num_capped"])),
    ("refine s / log p s", lambda s: f"{s['refine_seconds']:.1f} / {s['log_px_seconds']:.1f}"),
    ("active units, encoder / q*", lambda s: _diagnostic(s, "active_units")),
    ("I(x; z), encoder / q*", lambda s: _diagnostic(s, "mutual_information")),
    ("KL(q(z) ‖ p(z)), encoder / q*", lambda s: _diagnostic(s, "marginal_kl")),
]


def _tails(summary: dict[str, Any]) -> str:
    """', Student-t proposal (ν dof)' where IWAE's proposal was heavy-tailed, else ''."""
    dof = summary.get("proposal_dof")
    return "" if dof is None else f", Student-t proposal ({dof:g} dof)"


def _diagnostic(summary: dict[str, Any], key: str) -> str:
    """`encoder / q*` of a posterior diagnostic (`diagnostics.report`), — where there is none."""
    values = summary.get(key) or {}
    if "refined_se" in values:  # a mean with its standard error
        return " / ".join(_value(values, q) for q in ("encoder", "refined"))
    return " / ".join("—" if values.get(q) is None else str(values[q]) for q in ("encoder", "refined"))


def format_families(summaries: list[dict[str, Any]], names: list[str]) -> str | None:
    """Cremer et al. (2018), Table 2: log p(x), L[q*] of every family refined, L[q], and per family
    the approximation and amortization gaps (± standard error), one column per run; None
    when no run was refined in more than its own family."""
    present = {f for s in summaries for f in s.get("families", {})}
    families = [f.value for f in FamilyName if f.value in present]  # diagonal, full, flow
    if not any(len(s.get("families", {})) > 1 for s in summaries):
        return None

    def cell(summary: dict[str, Any], family: str, key: str) -> str:
        return _value(summary.get("families", {}).get(family, {}), key)

    lines = [
        "| families | "
        + " | ".join(f"{n} ({s['family']}-trained)" for n, s in zip(names, summaries, strict=True))
        + " |"
    ]
    lines.append("|---|" + "---|" * len(names))
    lines.append("| log p(x) | " + " | ".join(_value(s, "log_px") for s in summaries) + " |")
    for family in reversed(families):  # the most flexible first, as in Cremer et al.
        lines.append(
            f"| L[q*] {family} | " + " | ".join(cell(s, family, "elbo_refined") for s in summaries) + " |"
        )
    lines.append("| L[q] (encoder) | " + " | ".join(_value(s, "elbo_amortized") for s in summaries) + " |")
    for family in families:
        for key, label in (
            ("approximation_gap", "approximation gap"),
            ("amortization_gap", "amortization gap"),
        ):
            cells = [cell(s, family, key) for s in summaries]
            if any(c != "—" for c in cells):
                lines.append(f"| {label}, {family} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_table(
    summaries: list[dict[str, Any]], names: list[str], training: list[dict[str, Any]] | None = None
) -> str:
    """Markdown: one column per run; gap rows in nats per datapoint (± standard error)."""
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, cell in TRAINING_ROWS if training else []:
        cells = [cell(m) for m in training]
        if any(c != "—" for c in cells):  # a row no run has (e.g. the encoder's train ELBO) is left out
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    shown = [(key, label) for key, label in ROWS if any(s.get(key) is not None for s in summaries)]
    for key, label in shown:
        lines.append(f"| {label} | " + " | ".join(_value(s, key) for s in summaries) + " |")
    for label, cell in EVAL_ROWS:
        lines.append(f"| {label} | " + " | ".join(cell(s) for s in summaries) + " |")
    table = "\n".join(lines)
    families = format_families(summaries, names)
    return table if families is None else f"{table}\n\n{families}"
