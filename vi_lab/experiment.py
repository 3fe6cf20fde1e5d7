"""One TensorBoard HParams experiment per log root, so the HParams tab compares all its runs.

TensorBoard reads a single experiment record per log root (the first it finds), so it is
written once for the root, from every run below it: each hyperparameter with its type,
its values and whether it differs between runs, and as metric columns the tags training
logs (`train.METRIC_TAGS`) and the gaps of `vi-lab evaluate` on every split evaluated.
"""

from __future__ import annotations

import json
from pathlib import Path

from vi_lab.evaluation.evaluate import eval_tags
from vi_lab.runs.board import write_experiment
from vi_lab.train import METRIC_TAGS


def write_experiment_summary(root: str | Path) -> Path:
    """ROOT's one TensorBoard HParams experiment (`board.write_experiment`): the hyperparameters
    of every run below ROOT, and as metrics the training and validation tags and the gaps
    of `vi-lab evaluate` on every split evaluated below ROOT."""
    root = Path(root)
    splits = sorted({json.loads(path.read_text())["split"] for path in root.rglob("eval/gaps.json")})
    return write_experiment(root, [*METRIC_TAGS, *(tag for split in splits for tag in eval_tags(split))])
