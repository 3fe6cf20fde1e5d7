"""Evaluations on disk: each under its own name in RUN/eval/, and the one that runs share.

`vi-lab evaluate` writes RUN/eval/NAME/ (gaps.json, points.npz, figures), NAME saying what
was measured: the split, the log p(x) estimator and its size, the number of points, the
start of the refinement when it is not the default, and the families refined beside the
run's own, e.g. `test-iwae5000-n1000` or `valid-ais16x500-n300-prior-full+flow`. An
evaluation with other settings goes beside the earlier ones; the same settings again are
refused unless the caller asks to overwrite. RUN/eval/gaps.json is a copy of the latest
evaluation's summary (its `evaluation` key names the folder): the file the lab's interface
promises. Run folders evaluated before names existed hold one evaluation in RUN/eval/
itself; it is read under the name its gaps.json implies.

`shared_evaluation` picks, for several runs, the evaluation they all have, or says why there
is none; comparisons never mix splits, estimators or point sets.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from vi_lab.config import Estimator, EvalConfig, FamilyName, RefineInit

LATEST = "gaps.json"  # RUN/eval/gaps.json: the latest evaluation's summary


@dataclass(frozen=True)
class Evaluation:
    """One stored evaluation of a run."""

    run_dir: Path
    name: str
    folder: Path  # holds gaps.json and points.npz
    summary: dict[str, Any]

    def points(self) -> dict[str, np.ndarray]:
        """The per-point values (points.npz)."""
        with np.load(self.folder / "points.npz") as points:
            return dict(points)


def evaluation_name(config: EvalConfig, num_points: int, own_family: str) -> str:
    """The folder name of an evaluation with these settings on num_points points."""
    ais = f"{config.ais.num_chains}x{config.ais.num_steps}"
    size = {Estimator.iwae: str(config.num_samples), Estimator.ais: ais}.get(
        config.estimator, f"{config.num_samples}+{ais}"
    )
    if config.proposal_dof is not None and config.estimator != Estimator.ais:
        size += f"t{config.proposal_dof:g}"  # IWAE's Student-t proposal
    refined = [f.value for f in FamilyName if f in config.families or f.value == own_family]
    return _name(config.split, f"{config.estimator.value}{size}", num_points, config.init.value, refined)


def _name(split: str, estimator: str, num_points: int, init: str, families: list[str]) -> str:
    """split-estimator-nN[-init][-families]: the families (all refined, the run's own among them)
    only where more than one was, so that runs trained with different families share the name."""
    parts = [split, estimator, f"n{num_points}"]
    if init != RefineInit.auto.value:
        parts.append(init)
    if len(families) > 1:
        parts.append("+".join(families))
    return "-".join(parts)


def _legacy_name(summary: dict[str, Any]) -> str:
    """The name an evaluation written before names existed would have had."""
    refined = [f.value for f in FamilyName if f.value in summary.get("families", {})]
    estimator = f"{summary['estimator']}{summary['num_samples']}"
    return _name(summary["split"], estimator, summary["num_points"], RefineInit.auto.value, refined)


def points_digest(x: Tensor) -> str:
    """A fingerprint of the evaluated points (their values, shape and dtype): two evaluations
    were made on the same points exactly when their digests agree."""
    values = x.detach().cpu().contiguous()
    header = f"{tuple(values.shape)} {values.dtype}".encode()
    return hashlib.sha256(header + values.numpy().tobytes()).hexdigest()[:16]


def evaluation_folder(run_dir: Path, name: str, overwrite: bool) -> Path:
    """RUN/eval/NAME, checked before any work: FileExistsError if it holds an evaluation and
    `overwrite` is false. Nothing is created or removed here (`clear_folder` does that)."""
    folder = Path(run_dir) / "eval" / name
    if (folder / "gaps.json").exists() and not overwrite:
        raise FileExistsError(
            f"{folder} already holds this evaluation: pass --overwrite to replace it, "
            "or change a setting (split, estimator, num_points, ...) to add another"
        )
    return folder


def clear_folder(folder: Path) -> None:
    """An empty `folder` (an earlier evaluation's files removed) for a new evaluation."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def run_evaluations(run_dir: str | Path) -> dict[str, Evaluation]:
    """Every stored evaluation of a run, by name (an old run folder's single one included)."""
    run_dir = Path(run_dir)
    root = run_dir / "eval"
    found = {}
    for path in sorted(root.glob("*/gaps.json")):
        summary = json.loads(path.read_text())
        found[path.parent.name] = Evaluation(run_dir, path.parent.name, path.parent, summary)
    latest = root / LATEST
    if not found and latest.is_file() and (root / "points.npz").is_file():
        summary = json.loads(latest.read_text())
        if "evaluation" not in summary:  # written before evaluations had names
            name = _legacy_name(summary)
            found[name] = Evaluation(run_dir, name, root, summary)
    return found


def _describe(summary: dict[str, Any]) -> dict[str, Any]:
    """The settings that make two evaluations comparable."""
    return {
        "split": summary["split"],
        "estimator": f"{summary['estimator']} ({summary['num_samples']})",
        "points": summary["num_points"],
        "families": sorted(summary.get("families", {})),
    }


def shared_evaluation(run_dirs: list[Path], name: str | None = None) -> list[Evaluation]:
    """One evaluation per run, all under the same name: `name` if given, else the only name
    that every run has. ValueError naming what differs when there is none, or naming the
    candidates when several are shared."""
    stored = [run_evaluations(run_dir) for run_dir in run_dirs]
    for run_dir, evaluations in zip(run_dirs, stored, strict=True):
        if not evaluations:
            raise FileNotFoundError(f"{run_dir} has no evaluation: run `vi-lab evaluate {run_dir}` first")
    if name is not None:
        for run_dir, evaluations in zip(run_dirs, stored, strict=True):
            if name not in evaluations:
                raise ValueError(f"{run_dir} has no evaluation {name!r}; it has {', '.join(evaluations)}")
        return [evaluations[name] for evaluations in stored]
    shared = set.intersection(*(set(evaluations) for evaluations in stored))
    if len(shared) == 1:
        (only,) = shared
        return [evaluations[only] for evaluations in stored]
    if shared:
        raise ValueError(
            f"the runs share several evaluations ({', '.join(sorted(shared))}): choose one with --eval"
        )
    first, other = _closest_pair(stored)
    differences = [
        f"{key} {a} vs {b}"
        for (key, a), b in zip(
            _describe(first.summary).items(), _describe(other.summary).values(), strict=True
        )
        if a != b
    ]
    raise ValueError(
        f"no evaluation is shared by the runs: {first.run_dir} has {first.name}, {other.run_dir} has "
        f"{other.name} ({'; '.join(differences) or 'other refinement settings'}); evaluate them with the "
        "same settings"
    )


def _closest_pair(stored: list[dict[str, Evaluation]]) -> tuple[Evaluation, Evaluation]:
    """An evaluation of the first run and one of a run that lacks it, differing in as few
    settings as possible (what the refusal names)."""
    first = stored[0]
    lacking = next(evaluations for evaluations in stored[1:] if not set(first) <= set(evaluations))

    def distance(pair: tuple[Evaluation, Evaluation]) -> int:
        a, b = (_describe(e.summary) for e in pair)
        return sum(a[key] != b[key] for key in a)

    return min(((a, b) for a in first.values() for b in lacking.values()), key=distance)
