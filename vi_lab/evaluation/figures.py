"""Figures of the gaps: what `vi-lab evaluate` and `vi-lab compare` also draw.

Per evaluated run (from points.npz and metrics.json): histograms of the per-point
amortization gap L[q*] − L[q] and approximation gap log p(x) − L[q*] (Cremer, Li &
Duvenaud 2018, §3), one per variational family refined; the scatter of L[q] against L[q*]
per point (every point on or above the diagonal: refinement starts from the encoder's q);
for a 2-D latent, the exact posterior beside the encoder's q and each family's q* (their
Fig. 2); the validation gaps and the row gap over training. Across runs: validation
log p(x) and L[q*] against decoder steps and training seconds, the curves behind
`compare`'s equal-budget table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from vi_lab.evaluation.gaps import standard_error
from vi_lab.runs.figures import DPI, TITLE_LINE, WIDTH, new_figure, outside_legend, wrap

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


def evaluation_title(run_name: str, summary: dict[str, Any]) -> str:
    """What an evaluation figure shows: run, split, points, log p(x) estimator and q's family."""
    families = ", ".join(summary.get("families", {})) or summary["family"]
    return (
        f"{run_name}: {summary['split']} split, N = {summary['num_points']} points, "
        f"log p(x) by {summary['estimator'].upper()}-{summary['num_samples']}, q: {families}"
    )


def training_title(run_name: str, train: Any) -> str:
    """What the gaps-over-training figure shows (`train` is the run's TrainConfig)."""
    title = f"{run_name}: during training, validation on {train.valid_num_points} points"
    title += f" (IWAE-{train.valid_num_samples})"
    return title + (f", row gap on {train.gaps_num_points} training points" if train.gaps_every else "")


def gap_histograms(points: dict[str, np.ndarray], title: str) -> Figure:
    """One panel per gap present (the amortization gap needs an encoder), nats per point: a
    histogram per variational family refined (`key.family` in points), the mean dashed."""
    keys = [key for key in GAP_LABELS if key in points]
    figure = new_figure(title, len(keys))
    for ax, key in zip(figure.axes, keys, strict=True):
        families = {k.split(".", 1)[1]: v for k, v in points.items() if k.startswith(f"{key}.")} or {
            "": points[key]
        }
        titles = []
        for index, (family, values) in enumerate(families.items()):
            color = f"C{index}"
            label = family or None
            ax.hist(values, bins=min(30, max(5, len(values) // 5)), color=color, alpha=0.5, label=label)
            ax.axvline(values.mean(), color=color, linestyle="--", linewidth=1)
            titles.append(f"{family} {values.mean():.2f} ± {standard_error(values):.2f}".strip())
        ax.set(xlabel=f"{GAP_LABELS[key]} (nats)", ylabel="points")
        ax.set_title("mean (dashed) " + "; ".join(titles), fontsize=9)
    outside_legend(figure, title="variational family", fontsize=9)
    return figure


def posterior_panels(
    decoder: Any, x: Any, qs: dict[str, tuple[Any, Any]], title: str, num_points: int = 3
) -> Figure:
    """For the first points of a 2-D latent model, one row each: the exact posterior
    p(z | x) ∝ p(x | z) p(z) on its quadrature window, then each q of `qs` ({label: (family,
    params)}) as a histogram of its samples on the same window (Cremer et al. 2018, Fig. 2)."""
    import torch

    from vi_lab.evaluation.quadrature import grid_log_marginal, log_integrand

    x = x[:num_points]
    num_points = x.shape[0]
    nodes = 129
    with torch.no_grad():
        window = grid_log_marginal(decoder, x)
        grid = log_integrand(decoder, x, window.lower, window.upper, nodes, 64.0)  # (n, nodes, nodes)
        weights = torch.softmax(grid.flatten(1), 1).view_as(grid)  # the posterior on the grid
        t = torch.linspace(0.0, 1.0, nodes, dtype=x.dtype, device=x.device)
        axes_z = window.lower[:, :, None] + (window.upper - window.lower)[:, :, None] * t  # (n, 2, nodes)
        marginals = torch.stack([weights.sum(2), weights.sum(1)], 1)  # (n, 2, nodes)
        mean = (marginals * axes_z).sum(-1)
        std = ((marginals * (axes_z - mean[..., None]).square()).sum(-1)).sqrt()
        lower, upper = mean - 4 * std, mean + 4 * std  # the panels: 4 posterior std around its mean
        exact = log_integrand(decoder, x, lower, upper, nodes, 64.0)
    from matplotlib.figure import Figure

    columns = 1 + len(qs)
    side = WIDTH / columns  # square panels, the figure WIDTH wide
    title = wrap(title)
    height = side * num_points + TITLE_LINE * (title.count("\n") + 1)
    figure = Figure(figsize=(WIDTH, height), dpi=DPI, layout="constrained")
    figure.suptitle(title, fontsize=10)
    axes = figure.subplots(num_points, columns, squeeze=False)
    for i in range(num_points):
        extent = (float(lower[i, 0]), float(upper[i, 0]), float(lower[i, 1]), float(upper[i, 1]))
        panels = {"exact p(z | x)": (exact[i] - exact[i].max()).exp().T.cpu().numpy()}
        for label, (family, params) in qs.items():
            with torch.no_grad():
                z = family.sample(params[i : i + 1], 20000).z[:, 0].cpu().numpy()  # (S, 2)
            density, _, _ = np.histogram2d(
                z[:, 0], z[:, 1], bins=64, range=[extent[:2], extent[2:]], density=True
            )
            panels[label] = density.T
        for ax, (label, image) in zip(axes[i], panels.items(), strict=True):
            ax.imshow(image, origin="lower", extent=extent, aspect="auto", cmap="viridis")
            ax.set_title(label if i == 0 else "", fontsize=9)
            ax.set(xticks=[], yticks=[])
        axes[i, 0].set_ylabel(f"point {i}", fontsize=9)
    return figure


def bound_scatter(points: dict[str, np.ndarray], title: str) -> Figure | None:
    """L[q] (encoder) against L[q*] (refined) per point, with the diagonal; None without an encoder."""
    if "elbo_amortized" not in points:
        return None
    encoder, refined = points["elbo_amortized"], points["elbo_refined"]
    figure = new_figure(title, panel_height=3.2)
    ax = figure.axes[0]
    ax.scatter(encoder, refined, s=8, alpha=0.6, label="a point")
    low, high = min(encoder.min(), refined.min()), max(encoder.max(), refined.max())
    ax.plot([low, high], [low, high], color="black", linewidth=1, label="L[q*] = L[q] (no amortization gap)")
    ax.set(xlabel="L[q] (encoder), nats", ylabel="L[q*] (refined), nats")
    outside_legend(figure, fontsize=9)
    return figure


def gap_curves(history: list[dict[str, Any]], title: str) -> Figure | None:
    """The gaps measured during training against decoder steps (± standard error where logged)."""
    figure = new_figure(title)
    ax = figure.axes[0]
    drawn = False
    for key, label in CURVES:
        entries = [e for e in history if e.get(key) is not None]
        if not entries:
            continue
        steps = [e["step"] for e in entries]
        errors = [e.get(f"{key}_se", 0.0) for e in entries]
        ax.errorbar(steps, [e[key] for e in entries], yerr=errors, marker="o", markersize=5, label=label)
        drawn = True
    if not drawn:
        return None
    ax.set(xlabel="decoder steps", ylabel="nats per point")
    outside_legend(figure, fontsize=9)
    return figure


def budget_curves(histories: list[list[dict[str, Any]]], names: list[str]) -> Figure:
    """Validation log p(x) (solid, dots) and L[q*] (dashed, crosses) of each run against
    decoder steps and against training seconds: equal budgets are vertical lines through a
    panel. A run validated once is its markers alone."""
    figure = new_figure("validation log p(x) (solid, ●) and L[q*] (dashed, ×) at equal budgets", 2)
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
                markersize=6,
                label=name,
            )
            ax.plot(
                clocks,
                [e["valid_elbo_refined"] for e in entries],
                color=color,
                linestyle="--",
                marker="x",
                markersize=7,
            )
        ax.set(xlabel=label, ylabel="nats per valid. point")
    outside_legend(figure, fontsize=9)
    return figure


def diagnostics_bars(summary: dict[str, Any], title: str) -> Figure:
    """Posterior collapse per latent dimension (`diagnostics.py`), the encoder's q beside q*:
    KL(q_d || N(0, 1)) averaged over points, and Cov_x(E_q[z_d]) with the active-unit
    threshold (log scale); the titles give the active units and I_q(x; z) ± standard error."""
    from vi_lab.evaluation.diagnostics import ACTIVE_THRESHOLD

    qs = [name for name, value in summary["kl_per_dimension"].items() if value is not None]
    figure = new_figure(title, 2, panel_height=3.2)
    width = 0.8 / len(qs)
    for ax, key, label in zip(
        figure.axes,
        ("kl_per_dimension", "mean_variance"),
        ("KL(q_d ‖ N(0, 1)), nats", "Cov_x(E_q[z_d])"),
        strict=True,
    ):
        for index, name in enumerate(qs):
            values = np.asarray(summary[key][name])
            if key == "mean_variance":
                values = np.clip(values, 1e-6, None)  # a dead unit's variance is 0 up to rounding
            dims = np.arange(len(values))
            ax.bar(dims + (index - (len(qs) - 1) / 2) * width, values, width, label=_q_label(summary, name))
        ax.set(xlabel="latent dimension", ylabel=label)
        ax.xaxis.get_major_locator().set_params(integer=True)
    figure.axes[1].set_yscale("log")
    figure.axes[1].axhline(ACTIVE_THRESHOLD, color="black", linestyle="--", linewidth=1)
    outside_legend(figure, fontsize=8)
    ceiling = summary["mutual_information"].get("log_num_points")
    bound = "" if ceiling is None else f"; the I(x; z) estimate ≤ log N = {ceiling:.2f}"
    figure.axes[0].set_title(f"KL of each marginal, mean over points{bound}", fontsize=9)
    units = ", ".join(f"{name} {summary['active_units'][name]}" for name in qs)
    figure.axes[1].set_title(f"active units (above the dashed line): {units}", fontsize=9)
    return figure


def _q_label(summary: dict[str, Any], name: str) -> str:
    """'encoder q, I = 2.10 ± 0.05' (the MI where the family has one)."""
    mi = summary["mutual_information"]
    label = "encoder q" if name == "encoder" else "q* (refined)"
    return label if mi[name] is None else f"{label}, I(x; z) = {mi[name]:.2f} ± {mi[f'{name}_se']:.2f}"
