"""The score-function and reparameterization gradient estimators against the closed-form
ELBO gradient of a linear-Gaussian model, and `vi-lab gradvar` end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from vi_lab.cli import main
from vi_lab.config import load_config
from vi_lab.inference.estimators import (
    estimate,
    exact_gradient,
    reparameterization_gradient,
    score_function_gradient,
)
from vi_lab.inference.families import Diagonal, PlanarFlow
from vi_lab.models.linear_gaussian import LinearGaussianDecoder
from vi_lab.train import train
from vi_lab.uses.gradvar import compare_estimators, gradvar_run

DATA_DIM, LATENT_DIM, NUM_POINTS = 10, 3, 2
DIAGONAL = Diagonal(LATENT_DIM)
GROUPS = tuple(DIAGONAL.groups)  # loc, log_scale


@pytest.fixture
def problem() -> tuple[LinearGaussianDecoder, torch.Tensor, torch.Tensor]:
    """A linear-Gaussian decoder, two points, and a q that is not the optimum (the gradient is non-zero)."""
    torch.manual_seed(0)
    decoder = LinearGaussianDecoder(DATA_DIM, LATENT_DIM, init_scale=0.7)
    with torch.no_grad():
        decoder.log_noise.fill_(math.log(0.8))
    x = decoder.sample(torch.randn(NUM_POINTS, LATENT_DIM)).detach()
    loc = 0.5 * torch.randn(NUM_POINTS, LATENT_DIM)
    log_scale = -0.5 + 0.2 * torch.randn(NUM_POINTS, LATENT_DIM)
    return decoder, x, DIAGONAL.pack(loc, log_scale)


@pytest.mark.parametrize("name", ["reparameterization", "score_function", "score_function_loo"])
def test_estimators_are_unbiased(problem, name: str) -> None:
    decoder, x, params = problem
    torch.manual_seed(1)
    exact = exact_gradient(decoder, DIAGONAL, x, params)
    repeats = 20_000
    grads = estimate(name, decoder, DIAGONAL, x, params, num_samples=2, num_repeats=repeats)
    for group in GROUPS:
        assert grads[group].shape == (repeats, NUM_POINTS, LATENT_DIM)
        assert exact[group].abs().max() > 0.5  # a real gradient, not a trivially matched zero
        se = grads[group].std(0) / math.sqrt(repeats)
        z = (grads[group].mean(0) - exact[group]) / se  # (B, D)
        assert z.abs().max() < 3.5, f"{name} {group}: z = {z}"
        assert z.square().mean() < 2.5  # about 1 for an unbiased estimator
        total_z = (grads[group].sum((1, 2)).mean() - exact[group].sum()) / (
            grads[group].sum((1, 2)).std() / math.sqrt(repeats)
        )
        assert abs(total_z) < 3.0


def test_a_biased_estimate_is_detected(problem) -> None:
    """The check above can fail: dropping the KL term's gradient moves the mean by many s.e."""
    decoder, x, params = problem
    torch.manual_seed(1)
    exact = exact_gradient(decoder, DIAGONAL, x, params)
    grads = reparameterization_gradient(decoder, DIAGONAL, x, params, num_samples=2, num_repeats=5000)
    loc = DIAGONAL.unpack(params)[0]
    biased = grads[..., :LATENT_DIM] + loc  # the KL gradient added back
    z = (biased.mean(0) - exact["loc"]) / (biased.std(0) / math.sqrt(5000))
    assert z.abs().max() > 10


def test_score_function_variance_is_larger(problem) -> None:
    decoder, x, params = problem
    torch.manual_seed(2)
    results = compare_estimators(decoder, DIAGONAL, x, params, num_samples=4, num_repeats=2000)
    for group in GROUPS:
        plain = results["score_function"][group]
        loo = results["score_function_loo"][group]
        assert results["reparameterization"][group]["variance_ratio"] == 1.0
        assert plain["variance_ratio"] > 10.0
        assert 1.0 < loo["variance_ratio"] < plain["variance_ratio"]  # the baseline helps, not fully
        assert plain["snr"] < results["reparameterization"][group]["snr"]
        assert plain["max_abs_z"] < 4.5  # unbiased, with an exact gradient to compare


def test_leave_one_out_needs_two_samples(problem) -> None:
    decoder, x, params = problem
    with pytest.raises(ValueError, match="num_samples >= 2"):
        score_function_gradient(decoder, DIAGONAL, x, params, num_samples=1, baseline="loo")
    with pytest.raises(ValueError, match="baseline"):
        score_function_gradient(decoder, DIAGONAL, x, params, num_samples=2, baseline="mean")
    results = compare_estimators(decoder, DIAGONAL, x, params, num_samples=1, num_repeats=10)
    assert "score_function_loo" not in results


def test_the_score_function_needs_a_closed_form_density(problem) -> None:
    """A planar flow has no log q(z) at a given z: the score function refuses it, naming why."""
    decoder, x, _ = problem
    flow = PlanarFlow(LATENT_DIM, 2)
    with pytest.raises(NotImplementedError, match="log q"):
        score_function_gradient(decoder, flow, x, flow.prior(NUM_POINTS), num_samples=2)


def test_repeats_are_chunked_to_the_memory_budget(problem) -> None:
    decoder, x, params = problem
    grads = estimate("reparameterization", decoder, DIAGONAL, x, params, 3, 50, memory_budget_mb=1e-4)
    assert grads["loc"].shape == (50, NUM_POINTS, LATENT_DIM)
    assert grads["loc"].std(0).min() > 0  # independent repeats, not one chunk copied


@pytest.fixture(scope="module")
def lg_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("gradvar") / "run"
    overrides = ["progress=false", "train.epochs=1", "data.synthetic.num_points=1400"]
    train(load_config("configs/linear_gaussian.yaml", overrides), run_dir)
    return run_dir


def test_gradvar_writes_json_and_tensorboard(lg_run) -> None:
    summary = gradvar_run(lg_run, ["repeats=200", "num_points=4"])
    written = json.loads((lg_run / "uses" / "gradvar.json").read_text())
    assert written["repeats"] == 200 and written["num_points"] == 4 and written["exact_gradient"]
    assert set(written["estimators"]) == {"reparameterization", "score_function", "score_function_loo"}
    ratio = written["estimators"]["score_function"]["loc"]["variance_ratio"]
    assert ratio == pytest.approx(summary["estimators"]["score_function"]["loc"]["variance_ratio"])
    assert ratio > 10.0

    events = EventAccumulator(str(lg_run))
    events.Reload()
    tag = "uses/gradvar/loc/score_function_variance_ratio"
    assert tag in events.Tags()["scalars"]
    assert events.Scalars(tag)[-1].value == pytest.approx(ratio, rel=1e-5)


def test_gradvar_cli(lg_run, capsys) -> None:
    assert main(["gradvar", str(lg_run), "repeats=20", "num_points=2"]) == 0
    out = capsys.readouterr().out
    assert "score_function" in out and "gradvar.json" in out
    assert main(["gradvar", str(lg_run), "repeats=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vi-lab gradvar: error: repeats") and "\n" not in err
