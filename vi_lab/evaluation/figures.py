"""Figures of the gaps: what `vi-lab evaluate` and `vi-lab compare` also draw.

Per evaluated run (from points.npz and metrics.json): histograms of the per-point
amortization gap L[q*] − L[q] and approximation gap log p(x) − L[q*] (Cremer, Li &
Duvenaud 2018, §3); the scatter of L[q] against L[q*] per point (every point on or above
the diagonal: refinement starts from the encoder's q); the validation gaps and the row gap
over training. Across runs: validation log p(x) and L[q*] against decoder steps and
training seconds, the curves behind `compare`'s equal-budget table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from vi_lab.evaluation.gaps import standard_error
from vi_lab.runs.figures import new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

GAP_LABELS = {
    "amortization_gap": "amortization gap L[q*] − L[q]",
    "approximation_gap": "approximation gap log p(x) − L[q*]",
}
CURVES = [
    ("valid_amortization_gap", "valid amortization gap"),
    ("valid_approximation_gap", "valid approximation gap"),
    ("row_gap", "row gap (training points)"),
]


def gap_histograms(points: dict[str, np.ndarray]) -> Figure:
    """One histogram per gap present (the amortization gap needs an encoder), nats per point."""
    keys = [key for key in GAP_LABELS if key in points]
    figure = new_figure(len(keys))
    for ax, key in zip(figure.axes, keys, strict=True):
        values = points[key]
        ax.hist(values, bins=min(30, max(5, len(values) // 5)), color="tab:blue", alpha=0.8)
        ax.axvline(values.mean(), color="black", linestyle="--", linewidth=1)
        ax.set(xlabel=f"{GAP_LABELS[key]} (nats)", ylabel="points")
        ax.set_title(f"mean {values.mean():.2f} ± {standard_error(values):.2f}", fontsize=10)
    return figure


def bound_scatter(points: dict[str, np.ndarray]) -> Figure | None:
    """L[q] (encoder) against L[q*] (refined) per point, with the diagonal; None without an encoder."""
    if "elbo_amortized" not in points:
        return None
    encoder, refined = points["elbo_amortized"], points["elbo_refined"]
    figure = new_figure(panel_size=(4.0, 4.0))
    ax = figure.axes[0]
    ax.scatter(encoder, refined, s=6, alpha=0.6)
    low, high = min(encoder.min(), refined.min()), max(encoder.max(), refined.max())
    ax.plot([low, high], [low, high], color="black", linewidth=1, label="L[q*] = L[q]")
    ax.set(xlabel="L[q] (encoder)", ylabel="L[q*] (refined)")
    ax.legend(loc="lower right", fontsize=8)
    return figure


def gap_curves(history: list[dict[str, Any]]) -> Figure | None:
    """The gaps measured during training against decoder steps (± standard error where logged)."""
    figure = new_figure()
    ax = figure.axes[0]
    drawn = False
    for key, label in CURVES:
        entries = [e for e in history if e.get(key) is not None]
        if not entries:
            continue
        steps = [e["step"] for e in entries]
        errors = [e.get(f"{key}_se", 0.0) for e in entries]
        ax.errorbar(steps, [e[key] for e in entries], yerr=errors, marker="o", markersize=3, label=label)
        drawn = True
    if not drawn:
        return None
    ax.set(xlabel="decoder steps", ylabel="nats per point")
    ax.legend(fontsize=8)
    return figure


def budget_curves(histories: list[list[dict[str, Any]]], names: list[str]) -> Figure:
    """Validation log p(x) (solid) and L[q*] (dashed) of each run against decoder steps and
    against training seconds: equal budgets are vertical lines through both panels."""
    figure = new_figure(2)
    for ax, clock, label in zip(
        figure.axes, ("step", "train_seconds"), ("decoder steps", "training seconds"), strict=True
    ):
        for index, (history, name) in enumerate(zip(histories, names, strict=True)):
            entries = [e for e in history if "valid_log_px" in e]
            color = f"C{index}"
            clocks = [e[clock] for e in entries]
            ax.plot(
                clocks,
                [e["valid_log_px"] for e in entries],
                color=color,
                marker="o",
                markersize=3,
                label=name,
            )
            ax.plot(
                clocks, [e["valid_elbo_refined"] for e in entries], color=color, linestyle="--", marker="x"
            )
        ax.set(xlabel=label, ylabel="nats per validation point")
        ax.set_title("log p(x) (solid), L[q*] (dashed)", fontsize=10)
    figure.axes[0].legend(fontsize=8)
    return figure
