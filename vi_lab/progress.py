"""What a long command shows as it goes: progress bars where someone watches them, labelled
phases, and one line per event.

tqdm reads `TQDM_*` environment variables (e.g. `TQDM_DISABLE=1`) as defaults for the
arguments a caller does not pass (tqdm docs, "Environment variables"), and `disable=None`
hides a bar whose output is not a terminal. So a bar is off when the config says
`progress: false`, otherwise it follows TQDM_DISABLE when that is set, and else appears
on a terminal only: a redirected log gets no carriage-return updates. A phase that holds
the bar still (validation, say) relabels it while it lasts; whole lines go through the
bar's `write` (tqdm.write: stdout, above the bar on a terminal, a plain line in a log), so
a log still hears from a run once per epoch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm

ENV_DISABLE = "TQDM_DISABLE"


def progress_bar(iterable: Any = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar (pass tqdm's own arguments) obeying `enabled`, TQDM_DISABLE and the terminal."""
    if not enabled:
        kwargs["disable"] = True
    elif ENV_DISABLE not in os.environ:
        kwargs["disable"] = None  # on a terminal only
    return tqdm(iterable, **kwargs)


@contextmanager
def phase(bar: tqdm, label: str) -> Iterator[None]:
    """Label the bar with what is being done (e.g. "validating 200 points") until the block ends."""
    before = getattr(bar, "desc", "")  # a disabled bar has none
    bar.set_description_str(f"{before}: {label}" if before else label)
    try:
        yield
    finally:
        bar.set_description_str(before)
