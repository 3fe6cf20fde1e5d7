"""A throwaway PostgreSQL server for tests: Debian's `postgresql` binaries on a temporary folder.

The server runs as an unprivileged user (PostgreSQL refuses to run as root: as root the
server runs as `nobody`), listens on a free localhost port, requires a password over TCP
(scram-sha-256), and is stopped and deleted when the context ends. `make test` installs the
package where it can; `find_bin_dir` says why a server cannot be started where it cannot.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DEBIAN_BIN_DIRS = "/usr/lib/postgresql/*/bin"  # postgresql-NN installs initdb and pg_ctl here
USER, PASSWORD = "vi", "s3cr3t-pw"


def find_bin_dir() -> tuple[Path | None, str]:
    """The newest Debian PostgreSQL bin folder holding initdb and pg_ctl, or None and why not."""
    dirs = sorted(Path("/").glob(DEBIAN_BIN_DIRS.lstrip("/")), key=lambda p: int(p.parent.name))
    dirs = [d for d in dirs if (d / "initdb").is_file() and (d / "pg_ctl").is_file()]
    if not dirs:
        return None, f"no PostgreSQL server binaries in {DEBIAN_BIN_DIRS}: `apt-get install postgresql`"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return None, "running as root without `runuser`: PostgreSQL cannot be started as root"
    return dirs[-1], ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_server(bin_dir: Path) -> Iterator[str]:
    """Start a server; yield its URL, postgresql+psycopg://vi:PASSWORD@127.0.0.1:PORT/postgres."""
    root = Path(tempfile.mkdtemp(prefix="vi_lab-postgres-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
        as_user = ["runuser", "-u", "nobody", "--"]
    data, port = root / "data", free_port()

    def run(*args: str) -> None:
        done = subprocess.run([*as_user, *args], capture_output=True, text=True, cwd=root)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed ({done.returncode}): {done.stderr.strip()}")

    try:
        password_file = root / "password"
        password_file.write_text(PASSWORD)
        if as_user:
            os.chown(password_file, nobody.pw_uid, nobody.pw_gid)
        run(
            str(bin_dir / "initdb"),
            *("-D", str(data), "-U", USER, "--pwfile", str(password_file)),
            *("--auth-local=trust", "--auth-host=scram-sha-256", "--no-locale", "-E", "UTF8", "--no-sync"),
        )
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")
        try:
            yield f"postgresql+psycopg://{USER}:{PASSWORD}@127.0.0.1:{port}/postgres"
        finally:
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
