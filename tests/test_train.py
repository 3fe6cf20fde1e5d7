"""`train(config, run_dir)`: what a run writes, resumes, and refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

from vi_lab import train as training
from vi_lab.config import load_config
from vi_lab.inference import objectives
from vi_lab.models.model import build_model
from vi_lab.runs.checkpoint import load_checkpoint
from vi_lab.runs.folder import load_run
from vi_lab.runtime import seed_everything

ROOT = Path(__file__).parents[1]


def _config(*overrides: str):
    return load_config(ROOT / "configs" / "smoke.yaml", ["progress=false", *overrides])


def _tags(run_dir: Path) -> dict[str, list[str]]:
    events = EventAccumulator(str(run_dir), size_guidance={"tensors": 0, "images": 0, "histograms": 0})
    events.Reload()
    return events.Tags()


@pytest.mark.parametrize("kind", ["amortized", "local", "semi_amortized"])
def test_run_folder_holds_config_events_checkpoint_metrics(tmp_path, kind):
    run_dir = tmp_path / kind
    metrics = training.train(_config(f"inference.kind={kind}"), run_dir)
    assert (run_dir / "config.yaml").is_file()
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    for key in (
        "train_elbo",
        "valid_elbo_refined",
        "valid_log_px",
        "epochs",
        "seconds",
        "examples_per_second",
    ):
        assert on_disk[key] == metrics[key]
    assert on_disk["epochs"] == 2 and on_disk["examples_per_second"] > 0
    assert -800 < on_disk["valid_elbo_refined"] <= on_disk["valid_log_px"] + 3 * on_disk["valid_log_px_se"]
    assert on_disk["valid_log_px"] < 0

    tags = _tags(run_dir)
    expected = {
        "train/elbo",
        "train/recon",
        "train/kl",
        "train/beta",
        "train/lr",
        "valid/elbo_refined",
        "valid/log_px",
        "valid/approximation_gap",
        "charts/examples_per_second",
    }
    if kind == "local":
        expected |= {"train/inner_steps", "train/inner_gain"}
    else:
        if kind == "semi_amortized":  # their difference: the gap the K steps close during training
            expected |= {"train/elbo_encoder", "train/elbo_refined"}
        expected |= {"valid/elbo_encoder", "valid/amortization_gap"}
    assert expected <= set(tags["scalars"])
    assert "valid/elbo" not in tags["scalars"]  # no tag whose meaning depends on the mode
    assert {"images/reconstructions", "images/prior_samples"} <= set(tags["images"])
    assert "posterior/log_std" in tags["histograms"]
    assert any("hparams" in tag or "config" in tag for tag in tags["tensors"])

    state = load_checkpoint(run_dir / "checkpoint.pt")  # weights_only=True inside
    assert state["position"]["epoch"] == 2 and state["position"]["step"] == 10
    assert state["config"]["inference"]["kind"] == kind


def test_training_steps_change_decoder_and_encoder(tmp_path):
    config = _config("train.epochs=1")
    training.train(config, tmp_path / "run")
    run = load_run(tmp_path / "run")
    seed_everything(config.seed)  # as train() does before building the model
    initial = build_model(config, run.data)
    for name in ("decoder", "posterior"):
        before = dict(getattr(initial, name).named_parameters())
        after = dict(getattr(run.model, name).named_parameters())
        assert before.keys() == after.keys() and before
        assert all(not torch.equal(before[n], after[n]) for n in before), name


@pytest.mark.slow
def test_semi_amortized_with_no_steps_trains_as_an_amortized_run(tmp_path):
    """K = 0: the refined q is the encoder's q, so a semi-amortized run (either encoder
    gradient) takes the amortized run's steps exactly: same parameters after 5 decoder steps
    from the same seed. Negative control: one refinement step changes them."""
    short = [
        "train.epochs=1",
        "train.valid_num_points=20",
        "train.valid_num_samples=20",
        "eval.refine.max_steps=20",
    ]
    training.train(_config(*short), tmp_path / "amortized")
    reference = load_checkpoint(tmp_path / "amortized" / "checkpoint.pt")["model"]
    for steps, gradient in ((0, "stop_gradient"), (0, "backprop"), (1, "stop_gradient")):
        run_dir = tmp_path / f"semi_{steps}_{gradient}"
        semi = ["inference.kind=semi_amortized", f"inference.refine.num_steps={steps}"]
        training.train(_config(*short, *semi, f"inference.refine.encoder_gradient={gradient}"), run_dir)
        model = load_checkpoint(run_dir / "checkpoint.pt")["model"]
        assert model.keys() == reference.keys()
        same = [torch.equal(model[name], reference[name]) for name in reference]
        assert all(same) if steps == 0 else not any(same), (steps, gradient)


def test_resume_continues_from_the_saved_step(tmp_path):
    run_dir = tmp_path / "run"
    training.train(_config("train.epochs=1"), run_dir)
    assert load_checkpoint(run_dir / "checkpoint.pt")["position"]["step"] == 5
    metrics = training.train(_config("train.epochs=3"), run_dir, resume=True)
    assert metrics["epochs"] == 3 and metrics["steps"] == 15
    assert [h["step"] for h in metrics["history"]] == [5, 10, 15]


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    """Order, binarization and Monte Carlo noise are all restored: same numbers."""
    whole = training.train(_config("train.epochs=2", "inference.kind=local"), tmp_path / "whole")
    training.train(_config("train.epochs=1", "inference.kind=local"), tmp_path / "split")
    split = training.train(_config("train.epochs=2", "inference.kind=local"), tmp_path / "split", resume=True)
    assert split["train_elbo"] == pytest.approx(whole["train_elbo"], abs=1e-4)


def test_existing_run_folder_is_not_overwritten(tmp_path):
    training.train(_config("train.epochs=1"), tmp_path / "run")
    with pytest.raises(FileExistsError, match="--resume"):
        training.train(_config("train.epochs=1"), tmp_path / "run")


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    training.train(_config("train.epochs=1"), run_dir)
    good = load_checkpoint(run_dir / "checkpoint.pt")
    real_elbo, calls = objectives.elbo, {"n": 0}

    def poisoned(*args, **kwargs):
        terms = real_elbo(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            terms["elbo"] = terms["elbo"] * float("nan")
        return terms

    monkeypatch.setattr(objectives, "elbo", poisoned)
    with pytest.raises(training.NonFiniteLossError, match="step 8"):  # as TensorBoard numbers it
        training.train(_config("train.epochs=3"), run_dir, resume=True)
    after = load_checkpoint(run_dir / "checkpoint.pt")
    assert after["position"] == good["position"]
    for name, tensor in good["model"].items():
        assert torch.equal(tensor, after["model"][name])


def test_ctrl_c_saves_a_checkpoint_mid_epoch(tmp_path, monkeypatch):
    real_elbo, calls = objectives.elbo, {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_elbo(*args, **kwargs)

    monkeypatch.setattr(objectives, "elbo", interrupted)
    with pytest.raises(KeyboardInterrupt):
        training.train(_config(), tmp_path / "run")
    position = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["position"]
    assert position == {**position, "epoch": 0, "batch": 3, "step": 3}
    assert _session_status(tmp_path / "run") is None  # stopped, resumable: the session stays open
    monkeypatch.setattr(objectives, "elbo", real_elbo)
    metrics = training.train(_config(), tmp_path / "run", resume=True)
    assert metrics["steps"] == 10 and metrics["epochs"] == 2
    assert _session_status(tmp_path / "run") == api_pb2.STATUS_SUCCESS  # ended once it ran to its end


def _session_status(run_dir: Path) -> int | None:
    """The HParams session status TensorBoard reads from a run folder (None: not ended)."""
    events = EventAccumulator(str(run_dir))
    events.Reload()
    content = events.PluginTagToContent("hparams").get("_hparams_/session_end_info")
    return (
        None
        if content is None
        else plugin_data_pb2.HParamsPluginData.FromString(content).session_end_info.status
    )


def test_kl_warmup_and_cosine_schedule():
    config = _config("train.kl_warmup_epochs=2", "train.lr_schedule=cosine", "train.lr_min=1e-4").train
    assert [training.kl_weight(config, step, 10) for step in (0, 5, 10, 20, 40)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    assert training.kl_weight(_config().train, 0, 10) == 1.0  # off by default
    lrs = [training.learning_rate(config, step, 100) for step in (0, 50, 100)]
    assert lrs == pytest.approx([config.lr, (config.lr + 1e-4) / 2, 1e-4])
    assert training.learning_rate(_config().train, 50, 100) == _config().train.lr


def test_warmup_shapes_training_only_and_every_bound_has_beta_one(tmp_path):
    """During warm-up the logged train/beta rises; the validation bounds are beta = 1 bounds:
    the same decoder gives the same valid L[q*] whatever beta it was trained with."""
    run_dir = tmp_path / "run"
    training.train(_config("train.kl_warmup_epochs=4", "train.log_every=1"), run_dir)
    events = EventAccumulator(str(run_dir))
    events.Reload()
    betas = [event.value for event in events.Scalars("train/beta")]
    assert betas == sorted(betas) and betas[0] == 0.0 and 0 < betas[-1] < 1
    run = load_run(run_dir)
    from vi_lab.evaluation.gaps import measure_gaps

    x = run.data.x["valid"][: run.config.train.valid_num_points]
    with torch.random.fork_rng():
        torch.manual_seed(run.config.seed + 2)  # as the loop seeds its epoch-2 measurement
        report = measure_gaps(run.model, x, run.config.eval, num_samples=run.config.train.valid_num_samples)
    logged = json.loads((run_dir / "metrics.json").read_text())["valid_elbo_refined"]
    assert report.summary()["elbo_refined"] == pytest.approx(logged, abs=1e-4)


def test_scalars_are_stamped_with_the_training_clock(tmp_path):
    """TensorBoard's relative time axis is training time: the time between two logged
    points is the time spent in training steps between them, validation excluded."""
    run_dir = tmp_path / "run"
    metrics = training.train(_config("train.epochs=2"), run_dir)
    events = EventAccumulator(str(run_dir))
    events.Reload()
    stamps = {event.step: event.wall_time for event in events.Scalars("valid/log_px")}
    started = load_checkpoint(run_dir / "checkpoint.pt")["position"]["started"]
    for entry in metrics["history"]:
        assert stamps[entry["step"]] - started == pytest.approx(entry["train_seconds"], abs=1e-3)
