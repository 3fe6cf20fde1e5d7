"""Where a dataset's files come from: find them, check them, download them; what a reader returns.

Every dataset is a `Source`: its official files (`Files`: names, checksums, where to download
them, how else to get them) and a reader from the folder holding them to `Arrays`. One search
order serves them all: an explicit path (config ``data.path``, which must then hold the files),
``$VI_LAB_DATA/<folder>``, a system folder where a distribution package installs them, and
the user cache ``$XDG_CACHE_HOME/vi_lab/<folder>`` (default ~/.cache), where a download puts
them. Before a reader sees a file, its checksum (where one is published) is compared with the
official one. Every failure is a `DataFileError` of one line that says which file, where it
was looked for and how to get it.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pathlib
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from vi_lab.progress import progress_bar

ENV_VAR = "VI_LAB_DATA"
CHUNK_BYTES = 1 << 20
DOCS = "docs/datasets.md"


class DataFileError(RuntimeError):
    """A dataset file is missing, unreadable, malformed or corrupt (the message is one line)."""


@dataclass(frozen=True)
class Checksum:
    algorithm: str  # a hashlib name: "md5" or "sha256"
    digest: str  # lowercase hex
    of_content: bool = False  # of the decompressed content of a .gz file, not of its bytes


@dataclass(frozen=True)
class Files:
    """A dataset's official files and how to get them."""

    title: str  # "MNIST (LeCun et al. 1998)", for messages
    folder: str  # the folder under $VI_LAB_DATA and the user cache
    names: Mapping[str, str]  # key -> official file name
    checksums: Mapping[str, Checksum] | None  # None: none is published (the reader checks the structure)
    base_url: str | None  # the files are base_url + name; None: no download
    how_to_get: str = ""  # other ways to get them (a package, a web page), one sentence
    system_dir: pathlib.Path | None = None  # where a distribution package installs them
    env_folders: tuple[str, ...] | None = None  # tried under $VI_LAB_DATA in order; None: (folder,)


@dataclass
class Arrays:
    """What a reader returns: per split, images (N, C, H, W) or vectors (N, P), and labels (N,) or None.

    uint8 images hold intensities 0..255; float images are used as they are. "valid" may be
    absent: the training split then gives up `Source.num_valid` images to it.
    """

    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray | None]


@dataclass(frozen=True)
class Source:
    """A dataset: its files (None when data.path names the user's own file) and its reader."""

    files: Files | None
    read: Callable[[pathlib.Path], Arrays]  # the folder holding `files.names` (or the file) -> arrays
    num_valid: int | None = None  # images carved from training for validation when the reader gives none
    binary: bool = False  # the files hold binarized pixels already


def user_cache_dir(folder: str) -> pathlib.Path:
    """The per-user download folder: $XDG_CACHE_HOME (default ~/.cache)/vi_lab/<folder>."""
    cache_home = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(cache_home) / "vi_lab" / folder


def open_file(path: pathlib.Path) -> BinaryIO:
    """Binary stream of the decompressed content (gzip if the name ends with .gz)."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_error(path: pathlib.Path, exc: BaseException) -> DataFileError:
    """DataFileError for an I/O or decompression failure while reading `path`."""
    hint = ""
    if isinstance(exc, (gzip.BadGzipFile, EOFError, zlib.error)):
        hint = " The gzip data is damaged (truncated or corrupt copy?): delete the file and get it again."
    return DataFileError(f"{path}: cannot read ({type(exc).__name__}: {exc}).{hint}")


def file_digest(path: pathlib.Path, checksum: Checksum) -> str:
    """The hex digest of `path` (of its decompressed content with `of_content`), hashed in chunks."""
    digest = hashlib.new(checksum.algorithm, usedforsecurity=False)
    try:
        with open_file(path) if checksum.of_content else open(path, "rb") as stream:
            while chunk := stream.read(CHUNK_BYTES):
                digest.update(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise read_error(path, exc) from exc
    return digest.hexdigest()


def how_to_get(files: Files) -> str:
    """One sentence: every way to get the files."""
    ways = [files.how_to_get] if files.how_to_get else []
    if files.base_url is not None:
        ways.append(
            f"data.download=true fetches them from {files.base_url} (into data.path if set, else "
            f"{user_cache_dir(files.folder)})"
        )
    ways.append(f"or put them in a folder named by data.path or ${ENV_VAR}/{files.folder} (see {DOCS})")
    return "To get them: " + "; ".join(ways) + "."


def verify(files: Files, directory: pathlib.Path) -> None:
    """Compare every file in `directory` with its official checksum (where one is published)."""
    for key, checksum in (files.checksums or {}).items():
        path = directory / files.names[key]
        found = file_digest(path, checksum)
        if found != checksum.digest:
            what = "of the decompressed content " if checksum.of_content else ""
            raise DataFileError(
                f"{path}: {checksum.algorithm.upper()} {what}is {found}, expected {checksum.digest}: "
                f"the file is corrupt or not the official {files.title} release; delete it and get it again. "
                + how_to_get(files)
            )


def missing(files: Files, directory: pathlib.Path) -> list[str]:
    return [name for name in files.names.values() if not (directory / name).is_file()]


def candidates(files: Files) -> list[tuple[str, pathlib.Path | None]]:
    """The implicit search locations in order, labelled for messages (None: $VI_LAB_DATA unset)."""
    env = os.environ.get(ENV_VAR)
    found: list[tuple[str, pathlib.Path | None]] = []
    for sub in files.env_folders if files.env_folders is not None else (files.folder,):
        label = f"${ENV_VAR}/{sub}" if sub else f"${ENV_VAR}"
        found.append((label, pathlib.Path(env).expanduser() / sub if env else None))
    if files.system_dir is not None:
        found.append(("system package", files.system_dir))
    found.append(("user cache", user_cache_dir(files.folder)))
    return found


def find(files: Files, path: str | None = None) -> pathlib.Path | None:
    """The first folder holding all the files: `path`, then `candidates`; None when none does.

    An explicit `path` that lacks files is an error (DataFileError), not a reason to look elsewhere.
    """
    if path is not None:
        directory = pathlib.Path(path).expanduser()
        absent = missing(files, directory)
        if absent:
            raise DataFileError(
                f"data.path={directory} does not hold the {files.title} files: missing "
                f"{', '.join(absent)}. " + how_to_get(files)
            )
        return directory
    for _, directory in candidates(files):
        if directory is not None and not missing(files, directory):
            return directory
    return None


def not_found_message(files: Files) -> str:
    places = []
    for label, directory in candidates(files):
        if directory is None:
            state = "not set"
        elif not directory.is_dir():
            state = f"{directory} does not exist"
        else:
            state = f"{directory} lacks {', '.join(missing(files, directory))}"
        places.append(f"{label}: {state}")
    return (
        f"{files.title} files ({', '.join(files.names.values())}) not found; looked in "
        + "; ".join(places)
        + ". "
        + how_to_get(files)
    )


def _fetch(url: str, target: pathlib.Path, files: Files) -> None:
    """Download `url` to `target` through a temporary file in the same folder."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            length = response.headers.get("Content-Length")
            with progress_bar(
                total=int(length) if length else None, unit="B", unit_scale=True, desc=target.name
            ) as bar:
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    bar.update(len(chunk))
        os.replace(tmp_name, target)
    except OSError as exc:  # urllib.error.URLError and socket timeouts are OSErrors
        raise DataFileError(f"Downloading {url} failed: {exc}. " + how_to_get(files)) from exc
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def download(files: Files, dest: str | os.PathLike, base_url: str | None = None) -> pathlib.Path:
    """Fetch every file from `base_url` (default: the official; http(s):// or file://) into `dest`; verify."""
    base_url = base_url or files.base_url
    if base_url is None:
        raise DataFileError(f"{files.title} cannot be downloaded by the lab. " + how_to_get(files))
    directory = pathlib.Path(dest).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataFileError(f"Cannot create download folder {directory}: {exc}.") from exc
    for name in files.names.values():
        _fetch(base_url.rstrip("/") + "/" + name, directory / name, files)
    verify(files, directory)
    return directory


def locate(files: Files, path: str | None = None, download_if_missing: bool = False) -> pathlib.Path:
    """The verified folder holding the files, downloading them into `path` or the user cache if asked."""
    try:
        directory = find(files, path)
    except DataFileError:
        if not download_if_missing or files.base_url is None:
            raise
        directory = None
    if directory is None:
        if not download_if_missing or files.base_url is None:
            raise DataFileError(not_found_message(files))
        return download(files, path if path is not None else user_cache_dir(files.folder))
    verify(files, directory)
    return directory
