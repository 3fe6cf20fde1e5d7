"""Typed study configuration: what `vi-lab study` searches, how, and for how long.

A study file (configs/study/*.yaml) names a base train config, overrides of it, a search
space keyed by dotted train-config keys (`train.lr`, `inference.inner.max_steps`), the
objective(s), sampler, pruner and `n_trials`. As in `config.py`, OmegaConf's structured
configs reject unknown keys and wrong types naming the key, and `check()` methods hold
the range checks; every search-space entry is also applied, at both ends of its range,
as an override of the base config, so a key that is not in the train config (or a
value it cannot take) fails when the study file is loaded, not in trial 37.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from vi_lab.config import (
    Config,
    ConfigError,
    build,
    config_yaml,
    load_config,
    load_yaml_mapping,
    override,
    parse_overrides,
    require,
)

# objective name -> key of the metrics dict that `train` returns (train/row_gap needs
# train.gaps_every > 0). Every valid/ measure means the same for every inference kind:
# q refined to convergence on the fixed validation subset (see train.py).
OBJECTIVE_KEYS = {
    "valid/log_px": "valid_log_px",
    "valid/elbo_refined": "valid_elbo_refined",
    "valid/elbo_encoder": "valid_elbo_encoder",
    "valid/amortization_gap": "valid_amortization_gap",
    "valid/approximation_gap": "valid_approximation_gap",
    "train/elbo": "train_elbo",
    "train/row_gap": "row_gap",
    "seconds": "seconds",
    "train_seconds": "train_seconds",
    "examples_per_second": "examples_per_second",
}
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # one path component: never "..", "/" or ""


class ParamType(str, Enum):
    float = "float"
    int = "int"
    categorical = "categorical"


class Direction(str, Enum):
    maximize = "maximize"
    minimize = "minimize"


class SamplerKind(str, Enum):
    tpe = "tpe"
    random = "random"
    nsgaii = "nsgaii"  # multi-objective


class PrunerKind(str, Enum):
    median = "median"
    successive_halving = "successive_halving"
    hyperband = "hyperband"
    none = "none"


@dataclass
class ParamSpec:
    """One search dimension: `float`/`int` in [low, high] (log scale, step), or `categorical`.

    Categorical choices may be lists (e.g. `model.hidden: [[200, 200], [400, 400]]`);
    Optuna stores those as their JSON text.
    """

    type: ParamType = ParamType.float
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    def check(self, key: str) -> None:
        if self.type == ParamType.categorical:
            require(bool(self.choices), f"{key}.choices", "a categorical parameter needs a non-empty list")
            require(self.low is None and self.high is None, key, "a categorical parameter takes no low/high")
            texts = [choice_text(c) for c in self.choices]
            require(len(set(texts)) == len(texts), f"{key}.choices", "choices must be distinct")
            return
        require(
            self.choices is None,
            f"{key}.choices",
            f"only categorical parameters take choices, not {self.type.value}",
        )
        require(
            self.low is not None and self.high is not None,
            key,
            f"a {self.type.value} parameter needs low and high",
        )
        require(self.low < self.high, key, f"low ({self.low}) must be < high ({self.high})")
        require(not self.log or self.low > 0, f"{key}.log", f"a log scale needs low > 0 (low is {self.low})")
        require(self.step is None or self.step > 0, f"{key}.step", "must be positive")
        require(
            not (self.log and self.step is not None),
            f"{key}.step",
            "Optuna takes either log or step, not both",
        )
        if self.type == ParamType.int:
            for name in ("low", "high", "step"):
                value = getattr(self, name)
                require(value is None or float(value).is_integer(), f"{key}.{name}", "must be an integer")

    def ends(self) -> list[Any]:
        """Values that bracket the space: both bounds, or every choice."""
        if self.type == ParamType.categorical:
            return list(self.choices)
        if self.type == ParamType.int:
            return [int(self.low), int(self.high)]
        return [float(self.low), float(self.high)]


@dataclass
class ObjectiveSpec:
    metric: str = "valid/log_px"  # a key of OBJECTIVE_KEYS
    direction: Direction = Direction.maximize

    def check(self) -> None:
        require(
            self.metric in OBJECTIVE_KEYS, "metric", f"{self.metric!r} is not one of {list(OBJECTIVE_KEYS)}"
        )


@dataclass
class SamplerConfig:
    kind: SamplerKind = SamplerKind.tpe
    seed: int = 0  # trial n draws from the stream seeded by (seed, n): distinct across workers
    n_startup_trials: int = 10  # TPE: random trials before the model takes over

    def check(self) -> None:
        require(self.n_startup_trials >= 0, "n_startup_trials", "must be >= 0")


@dataclass
class PrunerConfig:
    """Pruning at epoch boundaries on the (single) objective; `none` for multi-objective studies."""

    kind: PrunerKind = PrunerKind.median
    n_startup_trials: int = 5  # median: finished trials before anything is pruned
    n_warmup_steps: int = 1  # median: epochs before a trial can be pruned
    min_resource: int = 1  # successive halving / hyperband: epochs every trial gets
    reduction_factor: int = 3  # successive halving / hyperband

    def check(self) -> None:
        for key in ("n_startup_trials", "n_warmup_steps"):
            require(getattr(self, key) >= 0, key, "must be >= 0")
        require(self.min_resource > 0, "min_resource", "must be positive")
        require(self.reduction_factor > 1, "reduction_factor", "must be > 1")


@dataclass
class HeartbeatConfig:
    """Database storages: how a trial whose worker died is found and run again.

    Optuna's heartbeat (RDBStorage `heartbeat_interval`, `grace_period`): a RUNNING trial
    whose worker has been silent for `grace_period` seconds is failed by the next worker that
    starts a trial, and its parameters are queued to run again (RetryHeartbeatStaleTrialCallback).
    """

    interval: int = 60  # seconds between a running trial's heartbeats
    grace_period: int = 180  # seconds of silence after which a RUNNING trial is reclaimed
    max_retry: int = 2  # times one trial's parameters are queued again

    def check(self) -> None:
        require(self.interval > 0, "interval", "must be positive")
        require(
            self.grace_period > self.interval,
            "grace_period",
            f"must exceed interval ({self.interval}), or live trials are reclaimed",
        )
        require(self.max_retry >= 0, "max_retry", "must be >= 0")


@dataclass
class StudyConfig:
    name: str | None = None  # default: the study file's stem
    base: str = ""  # train config; a relative path is looked up beside the study file, then in the cwd
    overrides: dict[str, Any] = field(default_factory=dict)  # partial train config merged over `base`
    space: dict[str, ParamSpec] = field(default_factory=dict)  # dotted train-config key -> range
    objectives: list[ObjectiveSpec] = field(default_factory=lambda: [ObjectiveSpec()])
    n_trials: int = 20  # the study's target: complete or pruned trials (see vi_lab/study/runner.py)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    heartbeat: HeartbeatConfig = field(default_factory=HeartbeatConfig)
    root: str = "runs/studies"  # the study folder is {root}/{name}

    def check(self) -> None:
        require(bool(self.name), "name", "must be a non-empty string")
        require(
            SAFE_NAME.fullmatch(self.name) is not None,
            "name",
            f"{self.name!r} names the study folder {{root}}/{{name}}: use up to 100 ASCII letters, digits, "
            "- _ . beginning with a letter or digit",
        )
        require(bool(self.base), "base", "name the train config the trials start from")
        require(self.n_trials > 0, "n_trials", "must be positive")
        require(len(self.objectives) > 0, "objectives", "must name at least one metric")
        for i, objective in enumerate(self.objectives):
            try:
                objective.check()
            except ConfigError as error:
                raise ConfigError(f"objectives.{i}.{error}") from None
        metrics = [o.metric for o in self.objectives]
        require(len(set(metrics)) == len(metrics), "objectives", "each metric may appear once")
        require(
            len(self.objectives) == 1 or self.pruner.kind == PrunerKind.none,
            "pruner.kind",
            "Optuna prunes single-objective studies only: set pruner.kind=none for several objectives",
        )
        require(len(self.space) > 0, "space", "give at least one parameter to search")
        for key, spec in self.space.items():
            spec.check(f"space.{key}")

    @property
    def directions(self) -> list[str]:
        return [o.direction.value for o in self.objectives]

    @property
    def study_dir(self) -> Path:
        return Path(self.root) / self.name


def choice_text(value: Any) -> Any:
    """A categorical choice as Optuna can store it: lists and dicts become JSON text."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def as_override(key: str, value: Any) -> str:
    """`key=value` for `config.override`; JSON is valid YAML, so lists and strings survive."""
    return f"{key}={value if isinstance(value, str) and value[:1] in '[{' else json.dumps(value)}"


def _dotlist(data: dict[str, Any], prefix: str = "") -> list[str]:
    items = []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            items += _dotlist(value, f"{prefix}{key}.")
        else:
            items.append(as_override(f"{prefix}{key}", value))
    return items


def _find_base(base: str, study_file: Path | None) -> Path:
    path = Path(base).expanduser()
    if path.is_absolute():
        candidates = [path]
    else:
        candidates = ([study_file.parent / path] if study_file else []) + [Path.cwd() / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(f"base: train config {base!r} not found (looked at {', '.join(map(str, candidates))})")


def base_config(config: StudyConfig) -> Config:
    """The train config every trial starts from: `base` with `overrides` applied."""
    try:
        return load_config(config.base, _dotlist(config.overrides))
    except ConfigError as error:
        raise ConfigError(f"overrides (of {config.base}): {error}") from None


def trial_overrides(config: StudyConfig, params: dict[str, Any]) -> list[str]:
    """The trial's suggested values as `key=value` overrides of the base config."""
    return [as_override(key, params[key]) for key in config.space if key in params]


def _check_space(config: StudyConfig, base: Config) -> None:
    for key, spec in config.space.items():
        for value in spec.ends():
            try:
                override(base, [as_override(key, choice_text(value))])
            except ConfigError as error:
                raise ConfigError(
                    f"space.{key}: cannot be applied to the train config {config.base}: {error}"
                ) from None


def load_study_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> StudyConfig:
    """Defaults, the study YAML, then `a.b=value` overrides; checked against its base config.

    The returned config has `name` filled in and `base` resolved to an absolute path, so
    worker processes and `--summary` do not depend on the working directory.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study config {path} does not exist")
    for item in overrides:
        if item.startswith("space."):
            raise ConfigError(
                f"{item.split('=')[0]}: search-space keys contain dots, so they cannot be overridden "
                "on the command line; edit the study file"
            )
    file = load_yaml_mapping(path)
    if "name" not in file or file.name is None:
        file.name = path.stem
    config = build(StudyConfig, file, parse_overrides(list(overrides)))
    config.base = str(_find_base(config.base, path))
    base = base_config(config)
    _check_space(config, base)
    if any(o.metric == "train/row_gap" for o in config.objectives):
        require(base.train.gaps_every > 0, "objectives", "train/row_gap needs train.gaps_every > 0")
    return config


def save_study_config(config: StudyConfig, path: str | Path) -> None:
    Path(path).write_text(config_yaml(config))
