"""One TensorBoard HParams experiment per log root, so the HParams tab compares all its runs.

TensorBoard reads a single experiment record per log root (the first it finds), so it is
written once for the root, from every run below it (`board.write_experiment`): each
hyperparameter with its type, its values and whether it differs between runs, and as
metric columns, in this order, the gaps of `vi-lab evaluate` on every split evaluated
(the amortization gap L[q*] − L[q], the approximation gap log p(x) − L[q*] and log p(x)
first: the question of Cremer, Li & Duvenaud 2018, which run has the smaller gap), each
family's gaps, then the tags training logs (`train.METRIC_TAGS`).
"""

from __future__ import annotations

import json
from pathlib import Path

from vi_lab.evaluation.evaluate import eval_tags
from vi_lab.evaluation.gaps import FAMILY_KEYS
from vi_lab.runs.board import write_experiment
from vi_lab.train import METRIC_TAGS

FIRST = ("amortization_gap", "approximation_gap", "log_px", "inferred_gap", "inference_gap")
SPLITS = ("test", "valid", "train")


def metric_tags(evaluations: list[dict]) -> list[str]:
    """The metric columns for runs holding `evaluations` (their gaps.json): per split, the
    gaps of `FIRST`, the other evaluated values, each family's gaps, then training's tags."""
    tags = []
    for split in sorted({e["split"] for e in evaluations}, key=SPLITS.index):
        rest = eval_tags(split)
        first = [f"eval/{split}/{key}" for key in FIRST]
        families = sorted({f for e in evaluations if e["split"] == split for f in e.get("families", {})})
        tags += [*first, *(t for t in rest if t not in first)]
        tags += [f"eval/{split}/{family}/{key}" for family in families for key in FAMILY_KEYS]
    return [*tags, *METRIC_TAGS]


def write_experiment_summary(root: str | Path) -> Path | None:
    """ROOT's one TensorBoard HParams experiment (`board.write_experiment`) with the metric
    columns of `metric_tags`; None when no run is below ROOT (nothing is written)."""
    root = Path(root)
    evaluations = [json.loads(path.read_text()) for path in sorted(root.rglob("eval/**/gaps.json"))]
    return write_experiment(root, metric_tags(evaluations))
