"""One writer at a time: an advisory OS lock (`fcntl.flock`) on a file, held for the life of a
training run or resume (RUN/.lock) or of an evaluation (RUN/.eval.lock), where a second
process is refused (`folder_lock`), or while a study's SQLite file is set up (`file_lock`:
the others wait their turn).

The lock belongs to the open file, so the kernel releases it when the process ends, however
it ends (kill -9 included): a lock file left by a dead process is simply taken over. The file
holds the holder's PID, which a refused process names. The file itself stays: removing it
would let a third process lock a new file while the second still waits on the old one.
flock is not reliable on every network file system (NFS emulates it with POSIX locks).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCKFILE = ".lock"  # training's
EVAL_LOCKFILE = ".eval.lock"  # evaluation's: it may run beside training, not beside another evaluation


class FolderLockedError(RuntimeError):
    """Another live process holds the folder's lock; the message names its PID."""


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Wait for, then hold, the lock on `path` (made if missing) during the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def folder_lock(folder: Path, what: str, name: str = LOCKFILE) -> Iterator[None]:
    """Hold FOLDER/`name` during the block; FolderLockedError at once when another process holds
    it. `what` says what the holder is doing (e.g. "being trained"), for the message."""
    path = folder / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise FolderLockedError(
                f"{folder} is already {what} in process {holder} (it holds {path}): "
                "wait for it to end or stop it, then try again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
