"""A signal that lands anywhere inside a training step: the run stops after that step, and the
resume is the uninterrupted run bit for bit (parameters, table, Adam state, history, RNG).

The signal is sent by a profile hook (`sys.setprofile`) at the n-th Python or C call of a
chosen step's loop body, counted from its first call (`kl_weight`): deterministic points
spread over the whole step (the inner loop or the refinement steps, the backward pass, Adam,
the metric window, the position update, the log point), in the three inference modes.
"""

from __future__ import annotations

import signal
import sys

import pytest
import torch

from tests.runs.tiny import tiny_config
from vi_lab import train as training
from vi_lab.runs.checkpoint import load_checkpoint
from vi_lab.runs.stopping import Terminated

STEP = 8  # the step interrupted (0-based): the 3rd of epoch 2, and a log point (step 9 % 3 == 0)
NUM_POINTS = 7  # points of the step the signal is sent at, evenly spread


def _config(kind: str):
    return tiny_config(f"inference.kind={kind}")


@pytest.fixture(autouse=True)
def sigint_as_at_a_terminal():
    """Python's own SIGINT handler, even where the test runner was started in the background
    (the shell then hands it SIGINT ignored, which training respects)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


class SignalInStep:
    """Counts the calls of step `STEP`'s loop body; sends `signum` at call number `at` (0: never)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, at: int = 0, signum: int = signal.SIGINT) -> None:
        self.at, self.signum, self.calls, self.sent = at, signum, 0, False
        self.calls_in_step: int | None = None
        real = training.kl_weight  # the first call of every step's loop body

        def kl_weight(train, step, steps_per_epoch):
            if step == STEP:
                sys.setprofile(self._profile)
            elif step == STEP + 1 and self.calls_in_step is None:
                sys.setprofile(None)
                self.calls_in_step = self.calls - 1  # the last call counted is this one
            return real(train, step, steps_per_epoch)

        monkeypatch.setattr(training, "kl_weight", kl_weight)

    def _profile(self, frame, event, arg) -> None:
        if event not in ("call", "c_call"):
            return
        self.calls += 1
        if self.calls == self.at and not self.sent:
            self.sent = True
            sys.setprofile(None)
            signal.raise_signal(self.signum)

    def __enter__(self) -> SignalInStep:
        return self

    def __exit__(self, *exc: object) -> None:
        sys.setprofile(None)


def _assert_same_run(split: dict, whole: dict) -> None:
    for name, tensor in whole["model"].items():
        assert torch.equal(split["model"][name], tensor), name
    for param, moments in whole["optimizer"]["state"].items():
        for key, value in moments.items():
            assert torch.equal(split["optimizer"]["state"][param][key], value), (param, key)
    assert split["optimizer"]["param_groups"] == whole["optimizer"]["param_groups"]

    def timeless(entries: list[dict]) -> list[dict]:
        return [{k: v for k, v in entry.items() if "seconds" not in k} for entry in entries]

    assert timeless(split["history"]) == timeless(whole["history"])
    for key in ("epoch", "batch", "step", "examples"):
        assert split["position"][key] == whole["position"][key], key
    assert torch.equal(split["rng"]["torch"], whole["rng"]["torch"])


@pytest.mark.parametrize("kind", ["local", "amortized", "semi_amortized"])
def test_a_signal_anywhere_in_a_step_stops_after_it_and_resumes_exactly(tmp_path, monkeypatch, kind):
    with SignalInStep(monkeypatch) as counter:
        training.train(_config(kind), tmp_path / "whole")
    whole, calls = load_checkpoint(tmp_path / "whole"), counter.calls_in_step
    assert calls is not None and calls > 50  # the loop body of one step, as the profile counts it
    points = torch.linspace(1, calls, NUM_POINTS).round().int().tolist()
    for number, at in enumerate(points):
        signum = (signal.SIGINT, signal.SIGTERM)[number % 2]
        run_dir = tmp_path / f"split{at}"
        with SignalInStep(monkeypatch, at, signum) as injected, pytest.raises(KeyboardInterrupt) as stop:
            training.train(_config(kind), run_dir)
        assert injected.sent and isinstance(stop.value, Terminated) == (signum == signal.SIGTERM)
        # after the step it hit (the last calls counted, fetching the next batch, come after its check)
        assert load_checkpoint(run_dir)["position"]["step"] in (STEP + 1, STEP + 2), at
        monkeypatch.undo()
        training.train(_config(kind), run_dir, resume=True)
        _assert_same_run(load_checkpoint(run_dir), whole)


def test_an_ignored_sigint_stays_ignored(tmp_path, monkeypatch):
    """A shell starts a background job with SIGINT ignored, so that Ctrl-C at the terminal leaves it alone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the fixture puts the handler back
    with SignalInStep(monkeypatch, at=100) as injected:
        metrics = training.train(_config("amortized"), tmp_path / "run")
    assert injected.sent and metrics["steps"] == 12
