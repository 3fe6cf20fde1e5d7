"""`vi-lab runs ROOT`: one line per run folder below ROOT, read from what the run wrote.

A run folder is a folder holding config.yaml (a study folder holds study.yaml instead).
Its line gives the inference kind, variational family and data from config.yaml; epochs
done (metrics.json, written after every epoch) of those planned; a status; the last
validation log p(x); and the evaluations it holds (every eval/NAME/gaps.json, as split,
estimator-samples and points). The status is *finished* once the planned epochs are
done; otherwise *running* when a file in the folder changed in the last `RECENT_SECONDS`
(checkpoints are written every epoch, TensorBoard events every two minutes), else
*stopped* (interrupted or failed: `vi-lab train --resume RUN` continues it).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from vi_lab.config import load_config

RECENT_SECONDS = 600.0
COLUMNS = ("run", "kind", "family", "data", "epochs", "status", "valid log p(x)", "evaluations")


def list_runs(root: str | Path, now: float | None = None) -> list[dict[str, str]]:
    """One dict per run folder below `root` (sorted by path), keyed by `COLUMNS`."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    now = time.time() if now is None else now
    return [_describe(path.parent, root, now) for path in sorted(root.rglob("config.yaml"))]


def _describe(run_dir: Path, root: Path, now: float) -> dict[str, str]:
    config = load_config(run_dir / "config.yaml")
    metrics_file = run_dir / "metrics.json"
    metrics: dict[str, Any] = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    done, planned = metrics.get("epochs", 0), config.train.epochs
    if done >= planned:
        status = "finished"
    else:
        newest = max(path.stat().st_mtime for path in run_dir.rglob("*") if path.is_file())
        status = "running" if now - newest < RECENT_SECONDS else "stopped"
    # each named evaluation (eval/NAME/gaps.json); eval/gaps.json, a copy of the latest, counts
    # only in a folder written before evaluations had names
    paths = sorted(run_dir.glob("eval/*/gaps.json")) or sorted(run_dir.glob("eval/gaps.json"))
    evaluations = []
    for path in paths:
        gaps = json.loads(path.read_text())
        evaluations.append(f"{gaps['split']} {gaps['estimator']}-{gaps['num_samples']} n{gaps['num_points']}")
    log_px = metrics.get("valid_log_px")
    return {
        "run": run_dir.relative_to(root).as_posix(),
        "kind": config.inference.kind.value,
        "family": config.inference.family.value,
        "data": config.data.name.value,
        "epochs": f"{done}/{planned}",
        "status": status,
        "valid log p(x)": "—" if log_px is None else f"{log_px:.2f}",
        "evaluations": "; ".join(evaluations) or "—",
    }


def format_runs(rows: list[dict[str, str]]) -> str:
    """The rows as aligned columns under a header, two spaces apart."""
    widths = [max(len(name), *(len(row[name]) for row in rows)) for name in COLUMNS]
    lines = [COLUMNS, *([row[name] for name in COLUMNS] for row in rows)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )
