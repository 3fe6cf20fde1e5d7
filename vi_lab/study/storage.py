"""Where a study lives, and opening it safely from many workers at once.

One process: a SQLite file, study.db, in the study folder. `--workers N`: the spawned
processes share a journal file, journal.log (Optuna's JournalFileBackend). Several
machines: a PostgreSQL (or MySQL) URL, given with `--storage` or, to keep a password out of
`ps` and shell history, in the environment variable VI_LAB_STORAGE.

Drivers (SQLAlchemy 2 dialects, https://docs.sqlalchemy.org/en/20/dialects/postgresql.html):
`postgresql+psycopg://` is psycopg 3 (`pip install -e '.[postgres]'`); plain `postgresql://`
means psycopg 3 from SQLAlchemy 2.1 on and psycopg2 before; `postgresql+psycopg2://` is psycopg2.

First start. Optuna's RDBStorage creates its tables (and PostgreSQL enum types) when it is
opened; two workers doing that at once on a fresh database collide (a UniqueViolation on
`CREATE TYPE`). On PostgreSQL every worker therefore opens the storage and creates the study
under one advisory lock (https://www.postgresql.org/docs/current/explicit-locking.html#ADVISORY-LOCKS),
so the first creates everything and the others find it made. SQLite has no such lock: there
they take turns through an OS lock on a file beside the database, study.db.lock (the first
invocation creating the tables raced the second: a UNIQUE constraint failed on
`alembic_version`).
"""

from __future__ import annotations

import os
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import optuna
import sqlalchemy
import sqlalchemy.engine
import sqlalchemy.exc
import sqlalchemy.pool
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial

from vi_lab.runs.lock import file_lock
from vi_lab.study.config import HeartbeatConfig, StudyConfig

STORAGE_ENV = "VI_LAB_STORAGE"
SQLITE_FILE = "study.db"
JOURNAL_FILE = "journal.log"
RDB_BACKENDS = ("sqlite", "postgresql", "mysql")
DRIVER_HINT = (
    "install a driver: `pip install -e '.[postgres]'` (psycopg 3) for postgresql+psycopg:// "
    "(or postgresql://), psycopg2-binary for postgresql+psycopg2://, pymysql for mysql+pymysql://"
)
SCHEMA_LOCK_KEY = zlib.crc32(b"vi_lab: create the Optuna schema")  # any fixed 64-bit key


class StorageError(ValueError):
    """The storage cannot be reached or opened: a wrong host, port, password, driver or folder."""


@dataclass(frozen=True)
class StorageLocation:
    """Where a study lives: an RDB URL or a journal file. Picklable, for spawned workers.

    `env` names the environment variable the URL came from, so printed commands can refer
    to it instead of to the URL.
    """

    url: str | None = None
    journal: str | None = None
    env: str | None = None

    def open(
        self,
        heartbeat: HeartbeatConfig | None = None,
        on_stale: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    ) -> BaseStorage:
        """The Optuna storage; RDB storages get the heartbeat and the stale-trial callback."""
        if self.journal is not None:
            return JournalStorage(JournalFileBackend(self.journal))
        heartbeat = heartbeat or HeartbeatConfig()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                self.url,
                heartbeat_interval=heartbeat.interval,
                grace_period=heartbeat.grace_period,
                heartbeat_stale_trial_callback=on_stale,
            )

    @contextmanager
    def setting_up(self) -> Iterator[None]:
        """Serialize first-time set-up among workers (PostgreSQL, SQLite); turn connection errors into
        one line."""
        try:
            if self.url is not None and self.backend == "sqlite":
                with self._sqlite_lock():
                    yield
                return
            if self.url is None or self.backend != "postgresql":
                yield
                return
            engine = sqlalchemy.create_engine(self.url, poolclass=sqlalchemy.pool.NullPool)
            try:
                with engine.connect() as connection:
                    lock = {"key": SCHEMA_LOCK_KEY}
                    connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), lock)
                    try:
                        yield
                    finally:
                        connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), lock)
            finally:
                engine.dispose()
        except ImportError as error:
            reason = error.__cause__ or error  # Optuna wraps SQLAlchemy's "No module named ..."
            raise StorageError(f"storage {self.describe()}: {reason}; {DRIVER_HINT}") from None
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as error:
            reason = " ".join(str(error.orig or error).split())
            raise StorageError(f"cannot open storage {self.describe()}: {reason}") from None

    @contextmanager
    def _sqlite_lock(self) -> Iterator[None]:
        """Hold DATABASE.lock (`runs.lock.file_lock`), where the database's folder exists."""
        database = sqlalchemy.engine.make_url(self.url).database
        folder = Path(database).parent if database and database != ":memory:" else None
        if folder is None or not folder.is_dir():
            yield  # in memory, or no folder: opening the storage will say what is wrong
            return
        with file_lock(Path(f"{database}.lock")):
            yield

    @property
    def backend(self) -> str:
        return sqlalchemy.engine.make_url(self.url).get_backend_name()

    def describe(self, *, source: bool = True) -> str:
        """The location with any password replaced by ***: safe for logs.

        `source`: say which environment variable the URL came from, if any.
        """
        if self.journal is not None:
            return f"journal file {self.journal}"
        text = sqlalchemy.engine.make_url(self.url).render_as_string(hide_password=True)
        return f"{text} (from ${self.env})" if self.env and source else text

    def dashboard_command(self) -> str:
        """An optuna-dashboard command that can be pasted as printed: no password, no ***."""
        if self.journal is not None:
            return f"optuna-dashboard '{self.journal}'"
        if self.env is not None:
            return f'optuna-dashboard "${self.env}"'
        url = sqlalchemy.engine.make_url(self.url)
        if url.password is None:
            return f"optuna-dashboard '{url.render_as_string(hide_password=False)}'"
        return f'optuna-dashboard "${STORAGE_ENV}"  (with {STORAGE_ENV} set to the --storage URL)'


def resolve_storage(
    config: StudyConfig, storage: str | None, workers: int, *, existing: bool = False
) -> StorageLocation:
    """`storage` (a database URL), else $VI_LAB_STORAGE, else the study folder's journal or SQLite file.

    A study folder holds one of the two: whichever exists is used, so a study started
    with `--workers` resumes in its journal. `existing=True` requires that it exists.
    """
    env = None
    if not storage and os.environ.get(STORAGE_ENV):
        storage, env = os.environ[STORAGE_ENV], STORAGE_ENV
    if storage:
        source = f"${env}" if env else "--storage"
        try:
            backend = sqlalchemy.engine.make_url(storage).get_backend_name()
        except sqlalchemy.exc.ArgumentError:
            shown = "(not shown)" if env else repr(storage)
            raise ValueError(
                f"{source} {shown} is not a database URL (e.g. postgresql+psycopg://user@host/db)"
            ) from None
        if backend not in RDB_BACKENDS:
            raise ValueError(
                f"{source}: {backend!r} databases are not supported; use one of {list(RDB_BACKENDS)}"
            )
        return StorageLocation(url=storage, env=env)
    study_dir = config.study_dir.resolve()
    journal, sqlite = study_dir / JOURNAL_FILE, study_dir / SQLITE_FILE
    if journal.is_file():
        return StorageLocation(journal=str(journal))
    if sqlite.is_file():
        if workers > 1:
            raise ValueError(
                f"{sqlite} was started by one process (SQLite); run it without --workers, "
                "or pass --storage with a PostgreSQL/MySQL URL for parallel workers"
            )
        return StorageLocation(url=f"sqlite:///{sqlite}")
    if existing:
        raise FileNotFoundError(f"no study in {study_dir}: run `vi-lab study` with this config first")
    return (
        StorageLocation(journal=str(journal)) if workers > 1 else StorageLocation(url=f"sqlite:///{sqlite}")
    )


def in_study_dir(location: StorageLocation, config: StudyConfig) -> bool:
    """Whether the storage is a file in the study folder (so the folder must exist before it opens)."""
    path = location.journal or (location.url or "").removeprefix("sqlite:///")
    return Path(path).parent == config.study_dir.resolve()
