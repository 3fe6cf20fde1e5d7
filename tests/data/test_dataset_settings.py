"""Dataset settings the config refuses, and what `vi-lab train` says when a dataset's files are absent."""

from __future__ import annotations

import pytest

from vi_lab.cli import main
from vi_lab.config import ConfigError, load_config


@pytest.mark.parametrize(
    ("overrides", "start"),
    [
        (
            ["data.name=binarized_mnist", "data.binarize=dynamic"],
            "data.binarize: binarized_mnist is binarized",
        ),
        (["data.name=binarized_mnist", "data.binarize=stochastic_static"], "data.binarize: binarized_mnist"),
        (["data.name=npz"], "data.path: data.name=npz reads the arrays from data.path=FILE.npz"),
        (["data.name=cifar10"], "data.binarize: cifar10 is modelled in colour"),
        (["data.classes=[-1]"], "data.classes: must be a non-empty list of fashion_mnist class ids in 0..9"),
        (
            ["data.name=omniglot", "data.classes=[50]"],
            "data.classes: must be a non-empty list of omniglot class ids in 0..49",
        ),
        (["data.name=binarized_mnist", "data.classes=[1]"], "data.classes: binarized_mnist has no labels"),
    ],
)
def test_refused_dataset_settings_name_the_key(overrides, start):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert str(info.value).startswith(start) and "\n" not in str(info.value)


def test_allowed_settings_of_binarized_mnist():
    for binarize in ("threshold", "none", "static"):
        load_config(None, ["data.name=binarized_mnist", f"data.binarize={binarize}"])


@pytest.mark.parametrize("config", ["configs/mnist.yaml", "configs/omniglot.yaml", "configs/cifar10.yaml"])
def test_missing_files_are_one_line_and_exit_2(config, tmp_path, capsys):
    assert main(["train", config, "progress=false", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "not found; looked in $VI_LAB_DATA/" in err and "user cache:" in err
    assert "data.download=true fetches them from" in err and "docs/datasets.md" in err


def test_cifar10_refuses_a_bernoulli_and_binarization_naming_the_key():
    with pytest.raises(ConfigError) as info:
        load_config("configs/cifar10.yaml", ["model.likelihood=bernoulli"])
    assert str(info.value).startswith("model.likelihood: a Bernoulli does not model cifar10")
    with pytest.raises(ConfigError, match=r"^data\.binarize: cifar10 is modelled in colour"):
        load_config("configs/cifar10.yaml", ["data.binarize=threshold"])
    load_config("configs/cifar10.yaml", ["model.likelihood=gaussian"])
