"""Checkpoints that prove their integrity (SHA-256 sidecars), a full disk while saving, and one
writer per run folder (`runs/lock.py`). What survives which fault is listed in the README."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
import warnings

import pytest

from tests.runs.tiny import tiny_config
from vi_lab import train as training
from vi_lab.cli import main
from vi_lab.runs import checkpoint
from vi_lab.runs.checkpoint import (
    CheckpointError,
    CheckpointFallbackWarning,
    CheckpointWriteError,
    load_checkpoint,
)
from vi_lab.runs.lock import EVAL_LOCKFILE, LOCKFILE, FolderLockedError, folder_lock


def _flip(path, num_bytes: int = 20) -> None:
    """XOR `num_bytes` bytes in the middle of the file: still a readable zip, other numbers."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + num_bytes] = bytes(b ^ 0x5A for b in data[middle : middle + num_bytes])
    path.write_bytes(bytes(data))


def _one_line_error(capsys, *args: str) -> str:
    assert main(list(args)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_flipped_bytes_are_found_and_the_previous_checkpoint_is_used(tmp_path, capsys):
    run_dir = tmp_path / "run"
    training.train(tiny_config(), run_dir)
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):  # the digest of the bytes on disk
        digest = hashlib.sha256((run_dir / name).read_bytes()).hexdigest()
        assert (run_dir / f"{name}.sha256").read_text() == f"{digest}\n"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # negative control: an intact checkpoint loads without a word
        assert load_checkpoint(run_dir)["position"]["epoch"] == 2

    _flip(run_dir / "checkpoint.pt")
    torch_reads_it = checkpoint._read  # the flipped file is still a loadable checkpoint to torch
    with pytest.warns(CheckpointFallbackWarning, match=r"SHA-256 digest in checkpoint\.pt\.sha256"):
        assert load_checkpoint(run_dir)["position"]["epoch"] == 1
    (run_dir / "checkpoint.pt.sha256").rename(tmp_path / "sidecar")
    assert torch_reads_it(run_dir / "checkpoint.pt", "cpu")["position"]["epoch"] == 2
    (tmp_path / "sidecar").rename(run_dir / "checkpoint.pt.sha256")

    _flip(run_dir / "checkpoint.prev.pt")
    for args in (["train", "--resume", str(run_dir)], ["evaluate", str(run_dir)], ["sample", str(run_dir)]):
        err = _one_line_error(capsys, *args)
        assert "no readable checkpoint" in err and "checkpoint.prev.pt: CheckpointError: its bytes" in err


def test_a_full_disk_while_saving_keeps_the_checkpoints_written_before(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    training.train(tiny_config("train.epochs=1"), run_dir)
    before = {name: (run_dir / name).read_bytes() for name in ("checkpoint.pt", "checkpoint.pt.sha256")}
    real_fdopen = os.fdopen

    class FullDisk:
        """A file that takes 1000 bytes, then fails as a full disk does (torch.save turns it
        into a RuntimeError of its zip writer: the OSError must still be reported)."""

        def __init__(self, file) -> None:
            self.file, self.written = file, 0

        def write(self, data) -> int:
            self.written += len(data)
            if self.written > 1000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.file.write(data)

        def __getattr__(self, name):
            return getattr(self.file, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.file.close()

    monkeypatch.setattr(os, "fdopen", lambda *args, **kwargs: FullDisk(real_fdopen(*args, **kwargs)))
    with pytest.raises(CheckpointWriteError, match=r"checkpoint\.pt: the checkpoint could not be written "):
        training.train(tiny_config(), run_dir, resume=True)
    err = _one_line_error(capsys, "train", "--resume", str(run_dir), "train.epochs=2")
    assert f"{run_dir / 'checkpoint.pt'}" in err and "No space left on device; it needs about" in err
    monkeypatch.undo()

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 10, 10))
    with pytest.raises(CheckpointWriteError, match=r"only 0\.0 MB free; it needs about"):
        training.train(tiny_config(), run_dir, resume=True)  # checked before writing
    monkeypatch.undo()

    for name, data in before.items():
        assert (run_dir / name).read_bytes() == data, name
    assert not list(run_dir.glob(".*.tmp"))  # no temp file left behind
    assert training.train(tiny_config(), run_dir, resume=True)["epochs"] == 2  # room again: it resumes


def test_one_writer_per_run_folder(tmp_path, capsys):
    run_dir = tmp_path / "run"
    training.train(tiny_config("train.epochs=1"), run_dir)
    refused = []

    def second_resume(epoch, metrics) -> None:  # while the first resume holds the folder
        with pytest.raises(FolderLockedError, match=f"already being trained in process {os.getpid()}"):
            training.train(tiny_config("train.epochs=3", "train.lr=0.1"), run_dir, resume=True)
        refused.append(epoch)

    training.train(tiny_config("train.epochs=3"), run_dir, resume=True, on_epoch=second_resume)
    assert refused == [2, 3]
    assert len((run_dir / "resumes.jsonl").read_text().splitlines()) == 1  # the first resume's only
    assert load_checkpoint(run_dir)["config"]["train"]["lr"] == tiny_config().train.lr
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 2  # the training's and the resume's
    assert (run_dir / "checkpoint.pt").read_bytes() != (run_dir / "checkpoint.prev.pt").read_bytes()

    holder = "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_EX)"
    hold = holder + "; os.write(fd, f'{os.getpid()}\\n'.encode()); print(flush=True); sys.stdin.read()"
    lock = str(run_dir / LOCKFILE)
    with subprocess.Popen(
        [sys.executable, "-c", hold, lock], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as other:
        other.stdout.readline()  # it holds the lock
        err = _one_line_error(capsys, "train", "--resume", str(run_dir), "train.epochs=4")
        assert f"already being trained in process {other.pid}" in err
        other.stdin.close()
    subprocess.run([sys.executable, "-c", holder, lock], check=True)  # took the lock and died holding it
    assert training.train(tiny_config("train.epochs=4"), run_dir, resume=True)["epochs"] == 4
    assert (run_dir / LOCKFILE).read_text() == f"{os.getpid()}\n"  # the stale lock was taken over


def test_a_checkpoint_that_is_a_folder_is_one_line(tmp_path):
    run_dir = tmp_path / "run"
    training.train(tiny_config("train.epochs=1"), run_dir)
    (run_dir / "checkpoint.pt").unlink()
    (run_dir / "checkpoint.pt").mkdir()
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt is not a file"):
        training.train(tiny_config(), run_dir, resume=True)


def test_one_evaluation_at_a_time_beside_training(tmp_path, capsys):
    run_dir = tmp_path / "run"
    training.train(tiny_config("train.epochs=1"), run_dir)
    evaluate = ["evaluate", str(run_dir), "num_points=5", "num_samples=10", "refine.max_steps=10"]
    with folder_lock(run_dir, "being trained"):  # training holds its own lock: evaluation goes on
        assert main(evaluate) == 0
    capsys.readouterr()
    with folder_lock(run_dir, "being evaluated", EVAL_LOCKFILE):
        err = _one_line_error(capsys, *evaluate)
    assert f"{run_dir} is already being evaluated in process {os.getpid()}" in err
