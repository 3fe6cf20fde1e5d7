"""Configs: shipped files load; bad keys, types and values fail naming the key."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from vi_lab.config import ConfigError, InferenceKind, from_dict, load_config, to_dict

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load_and_round_trip(path):
    config = load_config(path)
    assert from_dict(to_dict(config)) == config


def test_overrides_are_typed():
    config = load_config(None, ["inference.kind=local", "train.lr=0.01", "model.hidden=[10,20]"])
    assert config.inference.kind == InferenceKind.local
    assert config.train.lr == 0.01 and config.model.hidden == [10, 20]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.epochz=3", "train.epochz"),
        ("train.epochs=three", "train.epochs"),
        ("inference.kind=semi", "inference.kind"),
        ("inference.inner.max_steps=0", "inference.inner.max_steps"),
        ("inference.refine.num_steps=-1", "inference.refine.num_steps"),
        ("inference.refine.optimizer=lbfgs", "inference.refine.optimizer"),
        ("inference.refine.encoder_gradient=both", "inference.refine.encoder_gradient"),
        ("train.max_grad_norm=-1", "train.max_grad_norm"),
        ("eval.refine.lr=-1", "eval.refine.lr"),
        ("eval.split=dev", "eval.split"),
        ("data.classes=[12]", "data.classes"),
        ("model.encoder=linear", "model.encoder"),
        ("model.decoder=linear", "model.likelihood"),
    ],
)
def test_bad_override_names_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_override_without_equals_sign_says_how():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.epochs"])


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("eval.ais.num_steps=0", "eval.ais.num_steps"),
        ("eval.ais.step_size=0", "eval.ais.step_size"),
        ("eval.memory_budget_mb=0", "eval.memory_budget_mb"),
    ],
)
def test_every_setting_is_checked_when_the_config_is_built(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_yaml_top_level_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level is a list"):
        load_config(path)


def test_a_saved_config_with_a_retired_key_still_loads():
    """Runs saved before the stopping rule's `confidence` became `error_rate` load, without it,
    their refinement checks at the present defaults (the old rule's were sized for it) and the
    rest as saved; a config without the retired key keeps its checks, and any other unknown key
    still fails naming it (the negative controls)."""
    saved = to_dict(load_config())
    saved["inference"]["inner"]["confidence"] = 2.0
    saved["eval"]["refine"].update(
        confidence=2.0, check_every=50, check_samples=16, stop_windows=4, max_steps=3000
    )
    loaded = from_dict(saved)
    assert loaded.eval.refine == replace(load_config().eval.refine, max_steps=3000)
    assert loaded.inference == load_config().inference
    del saved["eval"]["refine"]["confidence"]
    assert from_dict(saved).eval.refine.check_every == 50
    saved["eval"]["refine"]["confidence"] = 2.0
    saved["eval"]["refine"]["confidance"] = 2.0
    with pytest.raises(ConfigError, match="confidance"):
        from_dict(saved)
