"""`train(config, run_dir) -> metrics`: the one training entry point (CLI, tests, Optuna).

Per minibatch (x, idx): `posterior.training_terms` does the work that precedes a decoder
step (the per-datapoint inner loop, K refinement steps of the encoder's q, or nothing for
an encoder) and returns the per-example objective, then one Adam step on its negative mean
moves the decoder (and the encoder, when there is one). This is coordinate ascent for local
runs (block coordinate ascent on the ELBO, Bishop 2006 §10.1.1), joint VAE training for
amortized runs (Kingma & Welling 2014) and semi-amortized training (Kim et al. 2018), with
the same loop; `train.max_grad_norm` clips the step's total gradient norm in every mode.
KL warm-up (Bowman et al. 2016; Sønderby et al. 2016) weights the KL term of the training
objective by beta; every reported bound has beta = 1.

Validation means the same for every mode: on a fixed subset of the validation split,
q is refined to convergence from the posterior's guess with the decoder frozen
(`eval.refine`), giving `valid/elbo_refined` and the importance-weighted `valid/log_px`
(plus `valid/elbo_encoder` where there is an encoder). Scalars are written with the
training clock as their wall time (seconds inside training steps since the run began),
so TensorBoard's "relative" axis compares runs at equal training time.

The run folder holds config.yaml, TensorBoard events, checkpoint.pt (every epoch, and
on Ctrl-C or SIGTERM; the one before it as checkpoint.prev.pt) and metrics.json. A
non-finite loss or validation ELBO stops the run before any checkpoint is written, so the
last good one stays intact; `resume=True` continues from it exactly, under the rules of
`runs/resume.py`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from vi_lab.config import Config, LRSchedule, TrainConfig, flatten, from_dict, save_config, to_dict
from vi_lab.data.datasets import Data, batches, epoch_generator, load_data, num_batches
from vi_lab.evaluation.gaps import measure_gaps, measure_row_gap, standard_error
from vi_lab.models.model import LatentVariableModel, build_model
from vi_lab.progress import progress_bar
from vi_lab.runs import resume as resuming
from vi_lab.runs.board import image_grid, write_hparams, write_json
from vi_lab.runs.checkpoint import FILENAME, PREVIOUS, CheckpointError, load_checkpoint, save_checkpoint
from vi_lab.runs.stopping import graceful_stop, signal_of, signals_deferred
from vi_lab.runtime import resolve_device, rng_state, seed_everything, set_rng_state

VALID_KEYS = ("elbo_refined", "log_px", "elbo_encoder", "amortization_gap", "approximation_gap")
METRIC_TAGS = [
    *(f"valid/{key}" for key in VALID_KEYS),
    "train/elbo",
    "train/row_gap",
    "charts/examples_per_second",
    "charts/seconds",
]
EpochCallback = Callable[[int, dict[str, Any]], None]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class Position:
    epoch: int = 0  # the epoch in progress
    batch: int = 0  # batches of that epoch already done
    step: int = 0  # decoder steps overall
    seconds: float = 0.0  # wall time overall
    step_seconds: float = 0.0  # wall time inside training steps (the training clock)
    examples: int = 0
    started: float = 0.0  # Unix time the run began: the origin of the scalars' wall times


def default_run_dir(config: Config, root: str | Path = "runs") -> Path:
    """A readable, sortable name: {dataset}__{kind}__s{seed}__{time}."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{config.data.name.value}__{config.inference.kind.value}__s{config.seed}__{stamp}"


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
    there); `hparams` replaces the flattened config in TensorBoard's HParams tab.
    """
    run_dir = Path(run_dir)
    device = resolve_device(config.device)
    seed_everything(config.seed)
    data = load_data(config.data, device)
    model = build_model(config, data).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    position, history = Position(started=time.time()), []

    if resume:
        state = load_checkpoint(run_dir)
        changes = resuming.check_resume(from_dict(state["config"]), config, state["position"]["epoch"])
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise CheckpointError(f"{run_dir}: the checkpoint does not fit the model: {error}") from None
        resuming.apply_to_optimizer(optimizer, config)
        set_rng_state(state["rng"])
        position, history = Position(**state["position"]), state["history"]
        resuming.record_resume(run_dir, config, changes, position.step)
    else:
        _check_fresh(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")

    # on resume, drop the events logged after the checkpoint (a run killed mid-epoch logged them)
    writer = SummaryWriter(str(run_dir), purge_step=position.step + 1 if resume else None)
    if not resume:
        write_hparams(writer, hparams or flatten(to_dict(config)), METRIC_TAGS)
        writer.add_text("config", "```\n" + (run_dir / "config.yaml").read_text() + "\n```")
    loop = _Loop(config, run_dir, data, model, optimizer, writer, position, history)
    if resume:
        loop.restore_epoch_sums(state.get("epoch_sums"))
    try:
        with graceful_stop():
            return loop.run(on_epoch)
    finally:
        writer.close()


def kl_weight(train: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """beta of KL warm-up at a decoder step: linear from 0 to 1 over `kl_warmup_epochs`."""
    if train.kl_warmup_epochs == 0:
        return 1.0
    return min(1.0, step / (train.kl_warmup_epochs * steps_per_epoch))


def learning_rate(train: TrainConfig, step: int, total_steps: int) -> float:
    """The decoder's (and encoder's) learning rate at a step: constant, or cosine to lr_min."""
    if train.lr_schedule == LRSchedule.constant:
        return train.lr
    progress = min(1.0, step / max(total_steps, 1))
    return train.lr_min + 0.5 * (train.lr - train.lr_min) * (1.0 + math.cos(math.pi * progress))


def _check_fresh(run_dir: Path) -> None:
    """A new run needs a folder without a run in it: not even the leftovers of a failed start."""
    if (run_dir / FILENAME).exists() or (run_dir / PREVIOUS).exists():
        raise FileExistsError(f"{run_dir} already holds a run: resume it with --resume, or pick another one")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise FileExistsError(
            f"{run_dir} holds files but no checkpoint (left by a run stopped before its first one): "
            "delete the folder or pick another"
        )


class _Loop:
    """The epochs of one run, with its logging and checkpoints."""

    def __init__(
        self,
        config: Config,
        run_dir: Path,
        data: Data,
        model: LatentVariableModel,
        optimizer: torch.optim.Optimizer,
        writer: SummaryWriter,
        position: Position,
        history: list[dict[str, Any]],
    ) -> None:
        self.config, self.run_dir, self.data, self.model = config, run_dir, data, model
        self.optimizer, self.writer, self.position, self.history = optimizer, writer, position, history
        self.window: list[Tensor] = []  # per-step sums of the logged terms since the last flush
        self.window_count = 0
        self.names: list[str] = []
        self.epoch_sums: Tensor | None = None
        self.epoch_count = 0
        self.steps_per_epoch = num_batches(data.num_train, config.train.batch_size)
        generator = torch.Generator().manual_seed(config.seed)
        self.prior_z = torch.randn(config.train.num_images, config.model.latent_dim, generator=generator)

    def scalar(self, tag: str, value: float) -> None:
        """One scalar at the current step, stamped with the training clock (see module doc)."""
        position = self.position
        self.writer.add_scalar(tag, value, position.step, walltime=position.started + position.step_seconds)

    def run(self, on_epoch: EpochCallback | None) -> dict[str, Any]:
        train = self.config.train
        bar = progress_bar(
            total=train.epochs * self.steps_per_epoch,
            initial=self.position.epoch * self.steps_per_epoch + self.position.batch,
            desc=self.run_dir.name,
            enabled=self.config.progress,
            dynamic_ncols=True,
        )
        metrics = self._summary() if self.history else {}
        try:
            while self.position.epoch < train.epochs:
                epoch_started = time.perf_counter()
                train_metrics = self._train_epoch(bar)
                metrics = self._end_epoch(train_metrics, epoch_started)
                if on_epoch is not None:
                    on_epoch(self.position.epoch, metrics)
        except KeyboardInterrupt as stop:
            self._flush_window()  # never save parameters that a non-finite step has touched
            self._save()
            bar.write(
                f"interrupted by {signal_of(stop).name}: checkpoint saved at step {self.position.step} "
                f"in {self.run_dir}; continue with `vi-lab train --resume {self.run_dir}`"
            )
            raise
        finally:
            bar.close()
        return metrics

    def _train_epoch(self, bar: tqdm) -> dict[str, float]:
        config, model, position = self.config, self.model, self.position
        total_steps = config.train.epochs * self.steps_per_epoch
        generator = epoch_generator(config.seed, position.epoch, self.data.x["train"].device)
        x_epoch = self.data.epoch_train(generator)
        if position.batch == 0:  # else resumed mid-epoch, with the sums so far from the checkpoint
            self.epoch_sums, self.epoch_count = None, 0
        seconds_before, started = position.step_seconds, time.perf_counter()
        for x, idx in batches(x_epoch, config.train.batch_size, generator, start=position.batch):
            beta = kl_weight(config.train, position.step, self.steps_per_epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = learning_rate(config.train, position.step, total_steps)
            values = model.posterior.training_terms(model.decoder, x, idx, beta, config.inference.num_samples)
            loss = -values.pop("objective").mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.train.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.max_grad_norm)
            self.optimizer.step()

            self.names = list(values)
            self.window.append(torch.stack([v.detach() for v in values.values()]).sum(1))  # (T,)
            self.window_count += x.shape[0]
            position.batch += 1
            position.step += 1
            position.examples += x.shape[0]
            bar.update(1)
            if position.step % config.train.log_every == 0:
                means = self._flush_window()
                position.step_seconds += time.perf_counter() - started
                started = time.perf_counter()
                for name, value in means.items():
                    self.scalar(f"train/{name}", value)
                self.scalar("train/beta", beta)
                self.scalar("train/lr", self.optimizer.param_groups[0]["lr"])
                bar.set_postfix(elbo=f"{means['elbo']:.2f}", epoch=position.epoch + 1)
        self._flush_window()
        position.step_seconds += time.perf_counter() - started
        if self.epoch_count == 0:
            return {}
        epoch_seconds = position.step_seconds - seconds_before
        self.scalar("charts/examples_per_second", self.epoch_count / max(epoch_seconds, 1e-9))
        return dict(zip(self.names, (self.epoch_sums / self.epoch_count).tolist(), strict=True))

    def _flush_window(self) -> dict[str, float]:
        """Check and reduce the steps since the last flush; returns per-example means.

        Each step only stacks its sums: the finiteness check and the reductions (and the
        device synchronization they cost) happen here, once per `train.log_every` steps.
        """
        if not self.window:
            return {}
        rows = torch.stack(self.window)  # (W, T)
        finite = torch.isfinite(rows).all(1)  # (W,)
        if not bool(finite.all()):
            step = self.position.step - len(self.window) + int((~finite).nonzero()[0]) + 1  # as logged
            kept = (
                f"the last good checkpoint in {self.run_dir} is kept"
                if (self.run_dir / FILENAME).exists()
                else "no checkpoint had been written yet"
            )
            raise NonFiniteLossError(
                f"the training loss became non-finite at step {step} (epoch {self.position.epoch + 1}); "
                f"{kept}. Try a smaller train.lr or inference.inner.lr."
            )
        sums = rows.sum(0)  # (T,)
        self.epoch_sums = sums if self.epoch_sums is None else self.epoch_sums + sums
        self.epoch_count += self.window_count
        means = dict(zip(self.names, (sums / self.window_count).tolist(), strict=True))
        self.window, self.window_count = [], 0
        return means

    def _end_epoch(self, train_metrics: dict[str, float], epoch_started: float) -> dict[str, Any]:
        config, model, position = self.config, self.model, self.position
        epoch = position.epoch + 1
        epoch_metrics: dict[str, Any] = {
            "epoch": epoch,
            "step": position.step,
            "train_seconds": position.step_seconds,
        }
        epoch_metrics.update({f"train_{name}": value for name, value in train_metrics.items()})
        model.eval()
        # Measurements draw their own random numbers: the training stream is left as it was.
        with torch.random.fork_rng():
            torch.manual_seed(config.seed + epoch)
            if epoch % config.train.valid_every == 0 or epoch == config.train.epochs:
                epoch_metrics.update(self._validate())
            if config.train.gaps_every and epoch % config.train.gaps_every == 0:
                epoch_metrics.update(self._row_gap())
        model.train()

        with signals_deferred():  # the epoch is done in full or not at all, on disk as in memory
            position.epoch += 1
            position.batch = 0
            position.seconds += time.perf_counter() - epoch_started
            self.scalar("charts/seconds", position.seconds)
            self.history.append(epoch_metrics)
            metrics = self._summary()
            self._save()  # before metrics.json, which must never be ahead of the checkpoint
            write_json(metrics, self.run_dir / "metrics.json")
        return metrics

    def _validate(self) -> dict[str, float]:
        """The comparable measure on the fixed validation subset, logged as valid/...;
        also reconstructions, prior samples and the refined q's log-scales."""
        train = self.config.train
        x = self.data.x["valid"][: train.valid_num_points]
        finite = all(bool(torch.isfinite(p).all()) for p in self.model.parameters())
        if finite:  # (refining q under a NaN decoder would only burn eval.refine.max_steps)
            report = measure_gaps(self.model, x, self.config.eval, num_samples=train.valid_num_samples)
            summary = report.summary()
            summary["elbo_encoder"] = summary["elbo_amortized"]
            values = {key: summary[key] for key in VALID_KEYS if summary[key] is not None}
        if not finite or not all(math.isfinite(value) for value in values.values()):
            raise NonFiniteLossError(
                f"the validation ELBO became non-finite after epoch {self.position.epoch + 1} "
                f"(step {self.position.step}); the last good checkpoint in {self.run_dir} is kept. "
                "Try a smaller train.lr."
            )
        for key, value in values.items():
            self.scalar(f"valid/{key}", value)
        step = self.position.step
        self.writer.add_histogram("posterior/log_scale", report.log_scale.flatten(), step)
        if self.data.image_shape is not None:
            self._log_images(x, report.loc)
        metrics = {f"valid_{key}": value for key, value in values.items()}
        metrics.update({f"valid_{key}_se": summary[f"{key}_se"] for key in ("elbo_refined", "log_px")})
        return metrics

    @torch.no_grad()
    def _log_images(self, x: Tensor, loc: Tensor) -> None:
        decoder, shape, step = self.model.decoder, self.data.image_shape, self.position.step
        num = min(self.config.train.num_images // 2, x.shape[0])
        pairs = torch.stack([x[:num], decoder.mean(loc[:num])], dim=1).flatten(0, 1)  # (2 num, P)
        self.writer.add_image("images/reconstructions", image_grid(pairs, shape), step)
        samples = decoder.mean(self.prior_z.to(x.device))
        self.writer.add_image("images/prior_samples", image_grid(samples, shape), step)

    def _row_gap(self) -> dict[str, float]:
        """How far the posterior's q of training points is from their own optimum L[q*_i]."""
        num = min(self.config.train.gaps_num_points, self.data.num_train)
        x = self.data.x["train"][:num]
        gap = measure_row_gap(self.model, x, torch.arange(num, device=x.device), self.config.eval)
        mean, se = gap.mean().item(), standard_error(gap.cpu().numpy())
        self.scalar("train/row_gap", mean)
        return {"row_gap": mean, "row_gap_se": se}

    def _summary(self) -> dict[str, Any]:
        """The last epoch's values, each measure from the latest epoch that has it."""
        position = self.position
        latest: dict[str, Any] = {}
        for entry in self.history:
            latest.update(entry)
        return {
            **{k: v for k, v in latest.items() if k.startswith(("train_", "valid_", "row_gap"))},
            "kind": self.config.inference.kind.value,
            "epochs": position.epoch,
            "steps": position.step,
            "seconds": position.seconds,
            "train_seconds": position.step_seconds,
            "examples_per_second": position.examples / max(position.step_seconds, 1e-9),
            "history": self.history,
        }

    def _save(self) -> None:
        save_checkpoint(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "rng": rng_state(),
                "position": asdict(self.position),
                "history": self.history,
                "config": to_dict(self.config),
                "epoch_sums": self._epoch_sums_state(),
            },
            self.run_dir / FILENAME,
        )

    def _epoch_sums_state(self) -> dict[str, Any] | None:
        """The finished batches of the epoch in progress: so a resume reports the whole epoch."""
        if self.epoch_sums is None:
            return None
        return {"names": self.names, "sums": self.epoch_sums.cpu(), "count": self.epoch_count}

    def restore_epoch_sums(self, state: dict[str, Any] | None) -> None:
        if state is not None and self.position.batch > 0:
            device = self.data.x["train"].device
            self.names, self.epoch_count = state["names"], state["count"]
            self.epoch_sums = state["sums"].to(device)
