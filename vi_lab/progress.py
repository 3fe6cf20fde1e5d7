"""Progress bars that show only where someone watches them.

tqdm reads `TQDM_*` environment variables (e.g. `TQDM_DISABLE=1`) as defaults for the
arguments a caller does not pass (tqdm docs, "Environment variables"), and `disable=None`
hides a bar whose output is not a terminal. So a bar is off when the config says
`progress: false`, otherwise it follows TQDM_DISABLE when that is set, and else appears
on a terminal only: a redirected log gets no carriage-return updates.
"""

from __future__ import annotations

import os
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
