"""TensorBoard output: image grids, figures, the HParams sessions and experiment, atomic JSON.

Tags are namespaced as in CleanRL: `train/...`, `valid/...`, `charts/...`,
`posterior/...`, `eval/...`.

The HParams tab (TensorBoard's hparams plugin) pairs three records. Each run opens a
*session* in its own event file: its hyperparameters (booleans as booleans) when it
starts, and its status once it is over (`end_session`). TensorBoard keeps the first
record of a tag in a run, so a session is ended once, when its outcome is final. A
session's group name, the "Trial ID" column of the table, is the run folder's name (not
summary_v2's default, a hash of the values); runs whose folders share a name are one group.
The table prints every number with five significant digits ("2.0000"), so integers are
written as strings ("2"), and their domain is sorted as numbers. The *experiment* (which
hyperparameters exist, their domains, whether they differ between runs, which scalar tags
are the metrics) is one record per log root: TensorBoard reads a single one, from
whichever run it meets first, so `write_experiment` keeps exactly one, built from the
sessions of every run below the root. It is written into the first run's folder, in a file
named to be read before the run's own: a file in the root would make the root a run of its
own (".") in every tab. The table ticks the first five hyperparameters and the first five
metrics: the experiment holds only the hyperparameters that differ between runs (all of
them when none does: one run, say), so that none of the five is a constant, and the metric
columns come in the order given.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.plugins.hparams import summary_v2 as hp
from tensorboard.summary.writer.record_writer import RecordWriter
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter

# "tfevents" in the name: TensorBoard reads it; ".0." sorts it before the run's own event files,
# so a server watching a run that is still training keeps reading the newest file.
EXPERIMENT_FILE = "events.out.tfevents.0.vi_lab.experiment"
EXPERIMENT_FILES = "events.out.tfevents.*vi_lab.experiment"  # this one, and earlier versions' in the root
HParamValue = bool | int | float | str


def image_grid(x: Tensor, image_shape: tuple[int, int, int], num_rows: int | None = None) -> Tensor:
    """(N, P) pixels in [0, 1] -> one (C, H', W') grid image, 2-pixel borders."""
    channels, height, width = image_shape
    num = x.shape[0]
    rows = num_rows or math.ceil(math.sqrt(num))
    cols = math.ceil(num / rows)
    pad = 2
    grid = torch.ones(channels, rows * (height + pad) + pad, cols * (width + pad) + pad)
    images = x.detach().float().clamp(0, 1).cpu().view(num, channels, height, width)
    for i in range(num):
        top, left = pad + (i // cols) * (height + pad), pad + (i % cols) * (width + pad)
        grid[:, top : top + height, left : left + width] = images[i]
    return grid


class NullWriter:
    """The SummaryWriter of ranks other than 0 under torchrun: every call does nothing, so one
    process writes the run's event file."""

    def __getattr__(self, name: str) -> Any:
        return _ignore


def _ignore(*args: Any, **kwargs: Any) -> None:
    return None


def write_png(image: Tensor, path: str | Path) -> Path:
    """Write an image in [0, 1] shaped (H, W), (1, H, W) or (3, H, W) as an 8-bit PNG (Pillow)."""
    if image.dim() == 2:
        image = image[None]
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"image must have shape (H, W), (1, H, W) or (3, H, W), got {tuple(image.shape)}")
    pixels = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)  # (C, H, W)
    array = pixels[0].numpy() if pixels.shape[0] == 1 else pixels.permute(1, 2, 0).numpy()
    path = Path(path)
    Image.fromarray(array).save(path, format="PNG")
    return path


def start_session(writer: SummaryWriter, params: dict[str, Any], name: str) -> None:
    """Open the run's HParams session, in the group `name` (the run folder's name), with its
    hyperparameters: booleans, floats and strings as they are, integers and other values as
    strings (see the module doc)."""
    clean = {k: v if isinstance(v, bool | float | str) else str(v) for k, v in params.items()}
    writer.file_writer.add_summary(hp.hparams_pb(clean, trial_id=name))


def end_session(writer: SummaryWriter, success: bool) -> None:
    """Close the run's HParams session: success (it ran to its end) or failure (given up)."""
    status = api_pb2.STATUS_SUCCESS if success else api_pb2.STATUS_FAILURE
    info = plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=time.time())
    writer.file_writer.add_summary(
        _summary(metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=info))
    )


def read_sessions(root: str | Path) -> dict[Path, dict[str, HParamValue]]:
    """The hyperparameters of every run below `root` (folders holding an HParams session)."""
    sessions = {}
    folders = {path.parent for path in Path(root).rglob("events.out.tfevents.*")}
    for folder in sorted(folders):
        for path in sorted(folder.glob("events.out.tfevents.*")):
            start = _session_start(path)
            if start is not None:
                sessions[folder] = {name: _python_value(value) for name, value in start.hparams.items()}
                break
    return sessions


def write_experiment(root: str | Path, metric_tags: Iterable[str]) -> Path | None:
    """Write ROOT's one HParams experiment: the hyperparameters of the runs below ROOT (their
    union, each with its domain; only those that differ between runs, where any does) and
    `metric_tags` as the metric columns, in that order. It goes into the first
    run's folder; None (nothing written) when no run is below ROOT. Earlier experiment
    records of vi_lab below ROOT are removed, since TensorBoard would read only one."""
    root = Path(root)
    sessions = read_sessions(root)
    if not sessions:
        return None
    values: dict[str, list[HParamValue]] = {}
    for params in sessions.values():
        for name, value in params.items():
            values.setdefault(name, []).append(value)
    infos = sorted((_hparam_info(name, v) for name, v in values.items()), key=lambda i: i.name)
    if any(info.differs for info in infos):  # else one run, or runs alike: keep every setting
        infos = [info for info in infos if info.differs]
    experiment = api_pb2.Experiment(
        time_created_secs=time.time(),
        hparam_infos=infos,
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag)) for tag in metric_tags],
    )
    summary = _summary(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment))
    folder = min(sessions)
    path = folder / EXPERIMENT_FILE
    temp = folder / ".vi_lab_experiment.tmp"  # no "tfevents" in the name: TensorBoard never reads it
    with temp.open("wb") as file:
        records = RecordWriter(file)
        for event in (
            event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"),
            event_pb2.Event(wall_time=time.time(), step=0, summary=summary),
        ):
            records.write(event.SerializeToString())
        records.flush()
    for stale in root.rglob(EXPERIMENT_FILES):
        if stale != path:
            stale.unlink()
    os.replace(temp, path)
    return path


def _hparam_info(name: str, values: list[HParamValue]) -> api_pb2.HParamInfo:
    """Type and domain from the values the runs used: all booleans, all numbers, else strings."""
    if all(isinstance(v, bool) for v in values):
        kind, domain = api_pb2.DATA_TYPE_BOOL, sorted(set(values))
    elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        low, high = min(values), max(values)
        return api_pb2.HParamInfo(
            name=name,
            type=api_pb2.DATA_TYPE_FLOAT64,
            domain_interval=api_pb2.Interval(min_value=low, max_value=high),
            differs=low != high,
        )
    else:
        strings = {str(v) for v in values}
        numeric = all(v.lstrip("-").isdigit() for v in strings)  # integers, written as strings
        kind, domain = api_pb2.DATA_TYPE_STRING, sorted(strings, key=int if numeric else None)
    info = api_pb2.HParamInfo(name=name, type=kind, differs=len(domain) > 1)
    info.domain_discrete.extend(domain)
    return info


def _python_value(value: Any) -> HParamValue:
    kind = value.WhichOneof("kind")
    return {"bool_value": value.bool_value, "number_value": value.number_value}.get(kind, value.string_value)


def _session_start(path: Path) -> plugin_data_pb2.SessionStartInfo | None:
    """The session start record of one event file (written first, so the scan stops early)."""
    if path.match(EXPERIMENT_FILES):
        return None
    for event in EventFileLoader(str(path)).Load():
        for value in event.summary.value:
            if value.tag == metadata.SESSION_START_INFO_TAG:
                return metadata.parse_session_start_info_plugin_data(value.metadata.plugin_data.content)
    return None


def _summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> summary_pb2.Summary:
    summary = summary_pb2.Summary()
    summary.value.add(tag=tag, metadata=metadata.create_summary_metadata(data), tensor=metadata.NULL_TENSOR)
    return summary


def write_json(data: dict[str, Any], path: str | Path) -> None:
    """Write JSON through a temp file and a rename, so a reader never sees half a file."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(data, indent=2, allow_nan=True) + "\n")
    os.replace(temp, path)
