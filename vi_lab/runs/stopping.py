"""Stopping on SIGINT (Ctrl-C) and SIGTERM (`kill`, schedulers) without losing work.

Python turns SIGINT into a KeyboardInterrupt raised wherever the main thread happens to
be. Inside `torch.save` that can be a write callback of torch's zip writer, which then
fails on exit ("unexpected pos") and hides the interrupt (Python docs, "Note on Signal
Handlers and Exceptions": a handler that only records the signal is the safe pattern for
critical sections). So:

- `graceful_stop()` (around a whole run or study worker) makes SIGTERM behave like Ctrl-C:
  it raises `Terminated`, a KeyboardInterrupt, so the same handlers save and stop;
- `signals_deferred()` (around a checkpoint write) only records a signal, and raises it
  once the write has completed, so the file on disk is always whole;
- `signals_recorded()` only records signals, for a caller that stops where it can:
  `agreed_stops()` (around the training loop) acts on them after each whole step, its
  position update included, so that a checkpoint never holds half a step; under torchrun
  the ranks agree on the stop, so that every rank stops after the same step.

Signal handlers belong to the process and run in the main thread; in any other thread
these context managers do nothing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from vi_lab import distributed

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + signal number, as shells report them


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: handled like Ctrl-C (checkpoint, then stop), reported as SIGTERM."""


def signal_of(error: KeyboardInterrupt) -> signal.Signals:
    return signal.SIGTERM if isinstance(error, Terminated) else signal.SIGINT


def exit_code(error: KeyboardInterrupt) -> int:
    return EXIT_CODES[signal_of(error)]


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"stopped by {signal.Signals(signum).name}")


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def _handlers(handler: Callable[[int, FrameType | None], Any], signals: tuple[int, ...]) -> Iterator[None]:
    """`handler` for `signals` during the block, except those ignored (SIG_IGN): a shell starts
    a background job with SIGINT ignored, so that Ctrl-C at the terminal leaves it alone."""
    handled = [number for number in signals if signal.getsignal(number) != signal.SIG_IGN]
    previous = {number: signal.signal(number, handler) for number in handled}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, signal.SIG_DFL if old is None else old)


@contextmanager
def graceful_stop() -> Iterator[None]:
    """SIGTERM raises `Terminated` (SIGINT keeps raising KeyboardInterrupt) until the block ends."""
    if not _in_main_thread():
        yield
        return
    with _handlers(_raise_terminated, (signal.SIGTERM,)):
        yield


@contextmanager
def signals_recorded() -> Iterator[list[int]]:
    """Record SIGINT/SIGTERM during the block, raising nothing: the caller polls the list."""
    received: list[int] = []
    if not _in_main_thread():
        yield received
        return
    with _handlers(lambda signum, frame: received.append(signum), SIGNALS):
        yield received


@contextmanager
def agreed_stops() -> Iterator[Callable[[], None]]:
    """A `check()` to call between training steps: SIGINT/SIGTERM are only recorded in the
    block, and `check` raises the stop (`stop_for`) once one has arrived. Under torchrun
    `check` is a collective, so every rank stops after the same step and all join the
    checkpoint; in one process it reads the record."""
    with signals_recorded() as received:
        if distributed.world_size() == 1:

            def check() -> None:
                if received:
                    raise stop_for(max(received))  # SIGTERM over SIGINT

        else:

            def check() -> None:
                signum = int(distributed.all_max(float(max(received, default=0))))  # SIGTERM over SIGINT
                if signum:
                    raise stop_for(signum)

        yield check


def stop_for(signum: int) -> KeyboardInterrupt:
    """What a signal raises under `graceful_stop`: `Terminated` for SIGTERM, else KeyboardInterrupt."""
    return Terminated("stopped by SIGTERM") if signum == signal.SIGTERM else KeyboardInterrupt()


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Record SIGINT/SIGTERM during the block; deliver the first one to the outer handler after it."""
    if not _in_main_thread():
        yield
        return
    received: list[int] = []
    try:
        with _handlers(lambda signum, frame: received.append(signum), SIGNALS):
            yield
    finally:
        if received:
            signal.raise_signal(received[0])
