"""`train(config, run_dir) -> metrics`: the one training entry point (CLI, tests, Optuna).

Per minibatch (x, idx): `posterior.training_terms` does the work that precedes a decoder
step (the per-datapoint inner loop, K refinement steps of the encoder's q, or nothing for
an encoder) and returns the per-example objective; one Adam step on its negative mean moves
the decoder (and the encoder, when there is one). This is block coordinate ascent on the
ELBO for local runs (Bishop 2006, Sec. 10.1.1), joint VAE training for amortized runs
(Kingma & Welling 2014, Algorithm 1) and semi-amortized training (Kim et al. 2018,
Algorithm 1), with the same loop; `train.max_grad_norm` clips the step's total gradient
norm in every mode.
KL warm-up weights the KL term of the training objective by beta (`runs/schedule.py`);
every reported bound has beta = 1.

Validation means the same for every mode: on a fixed subset of the validation split, q
is refined to convergence from the posterior's guess with the decoder frozen
(`eval.refine`), giving `valid/elbo_refined` and the importance-weighted `valid/log_px`
(plus `valid/elbo_encoder` where there is an encoder), and the posterior diagnostics of
`evaluation/diagnostics.py` (`diagnostics/...`) of the encoder's q and of q*. Scalars carry the training clock
as their wall time (seconds inside training steps since the run began), so TensorBoard's
"relative" axis compares runs at equal training time.

Every epoch and every validation prints one line (epoch, step, train ELBO or valid
log p(x), seconds), and the bar is labelled with the phase that holds it (`progress.py`).

The run folder holds config.yaml, TensorBoard events, checkpoint.pt (every epoch, and on
Ctrl-C or SIGTERM; the one before it as checkpoint.prev.pt) and metrics.json. A non-finite
loss or validation ELBO stops the run before any checkpoint is written, so the last good
one stays intact; `resume=True` continues from it exactly, under `runs/resume.py`'s rules.

Under torchrun (`torchrun --nproc_per_node N -m vi_lab.cli train ...`) every rank draws
the same global minibatch and works on the rows it owns (`distributed.Shard`): the table
is sharded, DistributedDataParallel averages the decoder's (and encoder's) gradients with
the single-process scale, and the logged sums are reduced over ranks, so a step is the
single-process step up to Monte Carlo noise. Rank 0 writes TensorBoard, config.yaml and
metrics.json; a checkpoint is written in shards (`runs/checkpoint.py`). A signal stops
every rank after the same step (they agree on it after each step), so the checkpoint
written on Ctrl-C or SIGTERM is a collective all ranks join.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from vi_lab import distributed
from vi_lab.config import Config, Precision, TrainConfig, flatten, save_config, to_dict
from vi_lab.data.datasets import Data, batches, epoch_generator, load_data, num_batches
from vi_lab.evaluation import diagnostics as diagnosing
from vi_lab.evaluation.validation import (
    VALID_KEYS,
    NonFiniteValidation,
    exact_row_gap,
    posterior_log_std,
    row_gap,
    row_gap_warning,
    validate,
    validation_images,
)
from vi_lab.models.model import LatentVariableModel, build_model
from vi_lab.progress import phase, progress_bar
from vi_lab.runs import resume as resuming
from vi_lab.runs.board import NullWriter, end_session, start_session, write_json
from vi_lab.runs.checkpoint import FILENAME, save_run_state
from vi_lab.runs.folder import check_fresh, claim_run_folder
from vi_lab.runs.schedule import kl_weight, learning_rate
from vi_lab.runs.stopping import agreed_stops, graceful_stop, signal_of, signals_deferred
from vi_lab.runs.window import MetricWindow, NonFiniteStep
from vi_lab.runtime import autocast, check_precision, resolve_device, rng_state, seed_everything

__all__ = ["NonFiniteLossError", "kl_weight", "learning_rate", "train", "train_step"]

METRIC_TAGS = [
    *(f"valid/{key}" for key in VALID_KEYS),
    "train/elbo",
    "train/row_gap",
    "train/row_gap_exact",
    "charts/examples_per_second",
    "charts/seconds",
]
EpochCallback = Callable[[int, dict[str, Any]], None]


class RowsLagWarning(UserWarning):
    """The per-datapoint table's rows are far from their optimum, or drifting away from it."""


class NonFiniteLossError(RuntimeError):
    """The training loss or validation ELBO became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class Position:
    epoch: int = 0  # the epoch in progress
    batch: int = 0  # batches of that epoch already done
    step: int = 0  # decoder steps overall
    seconds: float = 0.0  # wall time overall
    step_seconds: float = 0.0  # wall time inside training steps (the training clock)
    examples: int = 0
    started: float = 0.0  # Unix time the run began: the origin of the scalars' wall times


@dataclass
class _Run:
    """What the loop carries from step to step."""

    config: Config
    run_dir: Path
    data: Data
    model: LatentVariableModel
    optimizer: torch.optim.Optimizer
    writer: SummaryWriter | NullWriter
    position: Position
    history: list[dict[str, Any]]
    window: MetricWindow = field(default_factory=MetricWindow)
    network: nn.Module | None = None  # the model under DistributedDataParallel, under torchrun
    saved_at: tuple[int, int] | None = None  # (epoch, batch) of the last checkpoint written

    def scalar(self, tag: str, value: float) -> None:
        """One scalar at the current step, stamped with the training clock (see module doc)."""
        p = self.position
        self.writer.add_scalar(tag, value, p.step, walltime=p.started + p.step_seconds)


def train(
    config: Config,
    run_dir: str | Path,
    *,
    resume: bool = False,
    on_epoch: EpochCallback | None = None,
    hparams: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train (or resume) the run in `run_dir`; returns the metrics also saved as metrics.json.

    `on_epoch(epoch, metrics)` is called after every epoch (Optuna reports and prunes
    there); `hparams` replaces the flattened config in TensorBoard's HParams tab. The run's
    HParams session ends with success when the last epoch is done; a run stopped or failed
    leaves it open (TensorBoard shows its status as unknown), since it can be resumed.
    One process at a time trains a run folder (`runs.folder.claim_run_folder`).
    """
    run_dir = Path(run_dir)
    with claim_run_folder(run_dir, resume):
        return _train_claimed(config, run_dir, resume, on_epoch, hparams)


def _train_claimed(
    config: Config,
    run_dir: Path,
    resume: bool,
    on_epoch: EpochCallback | None,
    hparams: dict[str, Any] | None,
) -> dict[str, Any]:
    device = distributed.local_device(resolve_device(config.device))
    check_precision(config.runtime.precision, device)
    seed_everything(config.seed)
    data = load_data(config.data, device)
    model = build_model(config, data, distributed.current_shard()).to(device)
    distributed.decorrelate_rng()  # the inner loop's draws differ between ranks
    # fused: one kernel for all parameters, the same arithmetic (docs/performance.md measures it)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr, fused=True)
    position, history, window = Position(started=time.time()), [], MetricWindow()
    if resume:
        state = resuming.restore(run_dir, config, model, optimizer, data.num_train)
        position, history = Position(**state["position"]), state["history"]
        if position.batch > 0:  # resumed mid-epoch: the sums of its finished batches
            window.restore(state.get("epoch_sums"), device)
    else:
        check_fresh(run_dir)
        distributed.barrier()  # every rank has looked before rank 0 writes
        if distributed.is_main():
            run_dir.mkdir(parents=True, exist_ok=True)
            save_config(config, run_dir / "config.yaml")
        distributed.barrier()

    if not distributed.is_main():
        writer: SummaryWriter | NullWriter = NullWriter()
    else:  # on resume, drop the events logged after the checkpoint (a run killed mid-epoch logged them)
        writer = SummaryWriter(str(run_dir), purge_step=position.step + 1 if resume else None)
    if not resume and distributed.is_main():
        start_session(writer, hparams or flatten(to_dict(config)), run_dir.name)
        writer.add_text("config", "```\n" + (run_dir / "config.yaml").read_text() + "\n```")
    network = distributed.wrap(model, model.table_keys)
    run = _Run(config, run_dir, data, model, optimizer, writer, position, history, window, network)
    try:
        with graceful_stop():
            metrics = _run_epochs(run, on_epoch)
        if distributed.is_main():
            end_session(writer, success=True)  # only now: a stopped or failed run can still be resumed
        return metrics
    finally:
        writer.close()


def train_step(
    model: LatentVariableModel,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    idx: Tensor,
    beta: float,
    num_samples: int,
    max_grad_norm: float = 0.0,
    precision: Precision = Precision.float32,
    network: nn.Module | None = None,
) -> dict[str, Tensor]:
    """One decoder step on a minibatch; returns the per-example terms to log, each (B,).

    `max_grad_norm` > 0 clips the total gradient norm (Pascanu et al. 2013). With
    `precision` bf16 the forward passes (an inner loop's included) run under bf16 autocast
    (CUDA only: `runtime.check_precision`); parameters and Adam stay float32. Under torchrun
    (x, idx) is the global minibatch, of which this rank takes the rows it owns, and
    `network` is the model under DistributedDataParallel (`distributed.wrap`), whose
    all-reduce leaves every rank with the gradient of the global batch before clipping.
    """
    shard = distributed.current_shard()
    x_own, idx_own = shard.select(x, idx)
    with autocast(precision, x.device):
        terms = (network or model)(x_own, idx_own, beta, num_samples)  # posterior.training_terms
        # DDP averages over ranks: this scale makes the gradient that of the global batch mean
        loss = terms.pop("objective").sum() * (-shard.world_size / x.shape[0])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    return terms


def _run_epochs(run: _Run, on_epoch: EpochCallback | None) -> dict[str, Any]:
    steps_per_epoch = num_batches(run.data.num_train, run.config.train.batch_size)
    bar = progress_bar(
        total=run.config.train.epochs * steps_per_epoch,
        initial=run.position.epoch * steps_per_epoch + run.position.batch,
        desc=run.run_dir.name,
        enabled=run.config.progress,
        dynamic_ncols=True,
    )
    metrics = _summary(run) if run.history else {}
    try:
        with agreed_stops() as check_stop:
            while run.position.epoch < run.config.train.epochs:
                epoch_started = time.perf_counter()
                _train_epoch(run, bar, steps_per_epoch, check_stop)
                metrics = _end_epoch(run, bar, epoch_started)
                if on_epoch is not None:
                    on_epoch(run.position.epoch, metrics)
                check_stop()  # a signal during validation stops after the epoch's checkpoint
    except KeyboardInterrupt as stop:
        if run.saved_at != (run.position.epoch, run.position.batch):  # keep checkpoint.prev.pt distinct
            _save(run)  # never saves parameters that a non-finite step has touched (`_save`)
        bar.write(
            f"interrupted by {signal_of(stop).name}: checkpoint saved at step {run.position.step} "
            f"in {run.run_dir}; continue with `vi-lab train --resume {run.run_dir}`"
        )
        raise
    finally:
        bar.close()
    return metrics


def _train_epoch(run: _Run, bar: tqdm, steps_per_epoch: int, check_stop: Callable[[], None]) -> None:
    config, position, train = run.config, run.position, run.config.train
    generator = epoch_generator(config.seed, position.epoch, run.data.x["train"].device)
    x_epoch = run.data.epoch_train(generator)
    if position.batch == 0:  # else resumed mid-epoch, with the sums so far from the checkpoint
        run.window.start_epoch()
    seconds_before, started = position.step_seconds, time.perf_counter()
    for x, idx in batches(x_epoch, train.batch_size, generator, start=position.batch):
        beta = kl_weight(train, position.step, steps_per_epoch)
        for group in run.optimizer.param_groups:
            group["lr"] = learning_rate(train, position.step, train.epochs * steps_per_epoch)
        values = train_step(
            run.model,
            run.optimizer,
            x,
            idx,
            beta,
            config.inference.num_samples,
            train.max_grad_norm,
            config.runtime.precision,
            run.network,
        )
        run.window.add(values, x.shape[0])
        position.batch, position.step, position.examples = (
            position.batch + 1,
            position.step + 1,
            position.examples + x.shape[0],
        )
        bar.update(1)
        if position.step % train.log_every == 0:
            means = _flush(run)
            position.step_seconds += time.perf_counter() - started
            started = time.perf_counter()
            for name, value in {**means, "beta": beta, "lr": run.optimizer.param_groups[0]["lr"]}.items():
                run.scalar(f"train/{name}", value)
            bar.set_postfix(elbo=f"{means['elbo']:.2f}", epoch=position.epoch + 1)
        if _on_step_schedule(train, position.step) and position.batch < steps_per_epoch:
            position.step_seconds += time.perf_counter() - started  # validation is off the clock
            _validate_mid_epoch(run, steps_per_epoch)
            started = time.perf_counter()
        check_stop()
    _flush(run)
    position.step_seconds += time.perf_counter() - started
    if run.window.epoch_count:
        epoch_seconds = max(position.step_seconds - seconds_before, 1e-9)
        run.scalar("charts/examples_per_second", run.window.epoch_count / epoch_seconds)


def _flush(run: _Run) -> dict[str, float]:
    try:
        return run.window.flush()
    except NonFiniteStep as fault:
        raise _non_finite_loss(run, fault) from None


def _non_finite_loss(run: _Run, fault: NonFiniteStep) -> NonFiniteLossError:
    kept = (
        f"the last good checkpoint in {run.run_dir} is kept"
        if (run.run_dir / FILENAME).exists()
        else "no checkpoint had been written yet"
    )
    return NonFiniteLossError(
        f"the training loss became non-finite at step {run.position.step - fault.steps_ago} "  # as logged
        f"(epoch {run.position.epoch + 1}); {kept}. Try a smaller train.lr or inference.inner.lr."
    )


def _end_epoch(run: _Run, bar: tqdm, epoch_started: float) -> dict[str, Any]:
    config, position, train = run.config, run.position, run.config.train
    epoch = position.epoch + 1
    entry: dict[str, Any] = {
        "epoch": epoch,
        "step": position.step,
        "train_seconds": position.step_seconds,
        "examples": position.examples,
    }
    entry.update({f"train_{name}": value for name, value in run.window.epoch_means().items()})
    at = f"{run.run_dir.name} epoch {epoch}/{train.epochs} step {position.step}"
    _say(bar, f"{at}: train ELBO {entry.get('train_elbo', float('nan')):.2f} ({_since(epoch_started)})")
    run.model.eval()
    with torch.random.fork_rng():  # measurements draw their own numbers: training's stream is untouched
        torch.manual_seed(config.seed + epoch)
        if epoch % train.valid_every == 0 or epoch == train.epochs or _on_step_schedule(train, position.step):
            started = time.perf_counter()
            num_points = min(train.valid_num_points, run.data.x["valid"].shape[0])
            with phase(bar, f"validating {num_points} points"):
                entry.update(_validate(run))
            _say(
                bar,
                f"{at}: valid log p(x) {entry['valid_log_px']:.2f}, L[q*] "
                f"{entry['valid_elbo_refined']:.2f} on {num_points} points ({_since(started)})",
            )
        if train.gaps_every and epoch % train.gaps_every == 0:
            with phase(bar, f"row gap on {min(train.gaps_num_points, run.data.num_train)} training points"):
                entry.update(_row_gap(run))
    run.model.train()

    with signals_deferred():  # the epoch is done in full or not at all, on disk as in memory
        position.epoch, position.batch = epoch, 0
        position.seconds += time.perf_counter() - epoch_started
        run.scalar("charts/seconds", position.seconds)
        run.history.append(entry)
        metrics = _summary(run)
        _save(run)  # before metrics.json, which must never be ahead of the checkpoint
        if distributed.is_main():
            write_json(metrics, run.run_dir / "metrics.json")
    return metrics


def _say(bar: tqdm, line: str) -> None:
    """A line of the run's log (`progress`: above the bar on a terminal); rank 0 only."""
    if distributed.is_main():
        bar.write(line)


def _since(started: float) -> str:
    return f"{time.perf_counter() - started:.1f} s"


def _on_step_schedule(train: TrainConfig, step: int) -> bool:
    """Whether `train.valid_every_steps` asks for a validation after this decoder step."""
    return train.valid_every_steps > 0 and step % train.valid_every_steps == 0


def _validate_mid_epoch(run: _Run, steps_per_epoch: int) -> None:
    """A validation between two steps of an epoch, as its own history entry (epoch fractional)."""
    position = run.position
    entry: dict[str, Any] = {
        "epoch": round(position.epoch + position.batch / steps_per_epoch, 4),
        "step": position.step,
        "train_seconds": position.step_seconds,
        "examples": position.examples,
    }
    run.model.eval()
    with torch.random.fork_rng():  # as at an epoch's end: training's stream is untouched
        torch.manual_seed(run.config.seed + position.step)
        entry.update(_validate(run))
    run.model.train()
    run.history.append(entry)


def _validate(run: _Run) -> dict[str, float]:
    """`valid/...` on the fixed validation subset, the refined log-scales and image grids."""
    train = run.config.train
    x = run.data.x["valid"][: train.valid_num_points]
    try:
        values, report = validate(run.model, x, run.config.eval, train.valid_num_samples)
    except NonFiniteValidation:
        raise NonFiniteLossError(
            f"the validation ELBO became non-finite after epoch {run.position.epoch + 1} "
            f"(step {run.position.step}); the last good checkpoint in {run.run_dir} is kept. "
            "Try a smaller train.lr."
        ) from None
    for key in VALID_KEYS:
        if key in values:
            run.scalar(f"valid/{key}", values[key])
    family, params = run.model.family, report.own.params
    run.writer.add_histogram(
        "posterior/log_std", posterior_log_std(family, params).flatten(), run.position.step
    )
    with torch.no_grad():
        encoder = run.model.posterior.guess(x) if run.model.posterior.amortized else None
    diagnostics = diagnosing.diagnose_posteriors(family, encoder, params)
    for name, d in diagnostics.items():  # over latent dimensions: a spike at 0 is collapse
        if d is not None:
            kl = d.kl_per_dimension.mean(0)
            run.writer.add_histogram(f"diagnostics/kl_per_dimension_{name}", kl, run.position.step)
    diagnosed = diagnosing.scalars(diagnostics)
    for key, value in diagnosed.items():
        run.scalar(f"diagnostics/{key}", value)
    values.update(diagnosed)
    if run.data.image_shape is not None:
        center = family.center(params)
        images = validation_images(
            run.model.decoder, x, center, run.data.image_shape, train.num_images, run.config.seed
        )
        for tag, image in images.items():
            run.writer.add_image(tag, image, run.position.step)
    return {f"valid_{key}": value for key, value in values.items()}


def _row_gap(run: _Run) -> dict[str, Any]:
    """`train/row_gap` (and `train/row_gap_exact` where the decoder has a closed form); for a
    per-datapoint table, a warning when its rows lag (`validation.row_gap_warning`)."""
    x = run.data.x["train"][: min(run.config.train.gaps_num_points, run.data.num_train)]
    mean, se = row_gap(run.model, x, run.config.eval)
    run.scalar("train/row_gap", mean)
    values: dict[str, Any] = {"row_gap": mean, "row_gap_se": se}
    exact = exact_row_gap(run.model, x)
    if exact is not None:
        run.scalar("train/row_gap_exact", exact)
        values["row_gap_exact"] = exact
    if run.model.table_keys:  # an encoder's gap on training points is the amortization gap, not a lag
        previous = next((e for e in reversed(run.history) if "row_gap" in e), None)
        warning = row_gap_warning(previous, mean, se, run.position.epoch + 1)
        if warning is not None:
            values["row_gap_warning"] = warning
            if distributed.is_main():
                warnings.warn(warning, RowsLagWarning, stacklevel=2)
    return values


def _summary(run: _Run) -> dict[str, Any]:
    """The last epoch's values, each measure from the latest epoch that has it."""
    position, latest = run.position, {}
    for entry in run.history:
        latest.update(entry)
    return {
        **{k: v for k, v in latest.items() if k.startswith(("train_", "valid_", "row_gap"))},
        "kind": run.config.inference.kind.value,
        "epochs": position.epoch,
        "steps": position.step,
        "seconds": position.seconds,
        "train_seconds": position.step_seconds,
        "examples_per_second": position.examples / max(position.step_seconds, 1e-9),
        "warnings": [e["row_gap_warning"] for e in run.history if "row_gap_warning" in e],
        "history": run.history,
    }


def _save(run: _Run) -> None:
    """The run's checkpoint; `NonFiniteLossError`, saving nothing, when a step since the last
    log point was not finite."""
    try:
        sums = run.window.state()
    except NonFiniteStep as fault:
        raise _non_finite_loss(run, fault) from None
    state = {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "position": asdict(run.position),
        "history": run.history,
        "config": to_dict(run.config),
        "epoch_sums": sums,
    }
    save_run_state(
        state, rng_state(), run.run_dir, run.position.step, run.model.table_keys, run.data.num_train
    )
    run.saved_at = (run.position.epoch, run.position.batch)
