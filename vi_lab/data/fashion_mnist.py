"""Find, verify, download and read the Fashion-MNIST IDX files.

Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, arXiv:1708.07747) ships as four gzip-compressed
files in LeCun's IDX format (http://yann.lecun.com/exdb/mnist/): a big-endian int32 magic number
0x0000TTNN (TT = element type, 0x08 for unsigned bytes; NN = number of dimensions), NN big-endian
int32 sizes, then the elements in C order.

Search order for the files: an explicit path (config ``data.path``), ``$VI_LAB_DATA``, the Debian
package ``dataset-fashion-mnist`` (/usr/share/datasets/fashion-mnist), then the user cache
(``$XDG_CACHE_HOME/vi_lab/fashion-mnist``, default ~/.cache), where ``download`` puts them.
Every file is checked by the MD5 of its decompressed content before it is parsed.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import pathlib
import struct
import tempfile
import urllib.request
import zlib
from typing import BinaryIO

import numpy as np

from vi_lab.progress import progress_bar


class DataFileError(RuntimeError):
    """A Fashion-MNIST file is missing, unreadable, malformed or corrupt."""


FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

# MD5 of the decompressed files (the official release; the Debian package recompresses the .gz
# files, so their compressed bytes differ from Zalando's but the decompressed content matches).
MD5: dict[str, str] = {
    "train_images": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train_labels": "9018921c3c673c538a1fc5bad174d6f9",
    "test_images": "8181f5470baa50b63fa0f6fddb340f0a",
    "test_labels": "15d484375f8d13e6eb1aabb0c3f46965",
}

BASE_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
SYSTEM_DATA_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "VI_LAB_DATA"

IDX_UINT8 = 0x08
CHUNK_BYTES = 1 << 20

HOW_TO_GET = (
    "To get the data: `apt-get update && apt-get install -y dataset-fashion-mnist` "
    f"(installs into {SYSTEM_DATA_DIR}), or set data.path / ${ENV_VAR} to a directory holding "
    f"{', '.join(FILES.values())}, or pass download (data.download=true) to fetch them from {BASE_URL}."
)


def user_cache_dir() -> pathlib.Path:
    """The per-user download directory: $XDG_CACHE_HOME (default ~/.cache)/vi_lab/fashion-mnist."""
    cache_home = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(cache_home) / "vi_lab" / "fashion-mnist"


def _open(path: pathlib.Path) -> BinaryIO:
    """Binary stream of the decompressed content (gzip if the name ends with .gz)."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _read_error(path: pathlib.Path, exc: BaseException) -> DataFileError:
    """DataFileError for an I/O or decompression failure while reading `path`."""
    hint = ""
    if isinstance(exc, (gzip.BadGzipFile, EOFError, zlib.error)):
        hint = " The gzip data is damaged (truncated or corrupt copy?): delete the file and get it again."
    return DataFileError(f"{path}: cannot read ({type(exc).__name__}: {exc}).{hint}")


def _read_exact(stream: BinaryIO, count: int, path: pathlib.Path, what: str) -> bytes:
    data = stream.read(count)
    if len(data) != count:
        raise DataFileError(f"{path}: truncated {what}: expected {count} bytes, found {len(data)}.")
    return data


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (gzip-compressed if the name ends with .gz).

    Returns a uint8 array whose shape is the dimensions in the header.
    """
    path = pathlib.Path(path)
    try:
        with _open(path) as stream:
            magic = _read_exact(stream, 4, path, "IDX magic number")
            zero, dtype_code, ndim = struct.unpack(">HBB", magic)
            if zero != 0 or dtype_code != IDX_UINT8 or ndim == 0:
                raise DataFileError(
                    f"{path}: not an IDX file of unsigned bytes: magic number 0x{magic.hex()}, expected "
                    f"0x0000{IDX_UINT8:02x}NN with NN >= 1 dimensions. Is this a Fashion-MNIST file?"
                )
            dims = struct.unpack(f">{ndim}i", _read_exact(stream, 4 * ndim, path, "IDX dimensions"))
            if min(dims) < 0:
                raise DataFileError(f"{path}: negative dimension in IDX header {dims}.")
            expected = math.prod(dims)
            data = np.empty(expected, dtype=np.uint8)
            buffer = memoryview(data)
            found = 0
            while found < expected and (n := stream.readinto(buffer[found:])):
                found += n
            while chunk := stream.read(CHUNK_BYTES):
                found += len(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise _read_error(path, exc) from exc
    if found != expected:
        problem = "file is truncated" if found < expected else "file has trailing bytes"
        raise DataFileError(
            f"{path}: {problem}: the IDX header gives shape {dims}, so {expected} data bytes were "
            f"expected after it, but {found} were found. Delete the file and get it again."
        )
    return data.reshape(dims)


def _decompressed_md5(path: pathlib.Path) -> str:
    """MD5 of the decompressed content, hashed in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with _open(path) as stream:
            while chunk := stream.read(CHUNK_BYTES):
                digest.update(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise _read_error(path, exc) from exc
    return digest.hexdigest()


def _verify(directory: pathlib.Path) -> None:
    """Check every file in `directory` against the MD5 table."""
    for key, name in FILES.items():
        path = directory / name
        found = _decompressed_md5(path)
        if found != MD5[key]:
            raise DataFileError(
                f"{path}: MD5 of the decompressed content is {found}, expected {MD5[key]}; the file is "
                "corrupt or not the official Fashion-MNIST release. Delete it and reinstall "
                "(`apt-get install --reinstall dataset-fashion-mnist`) or download it again "
                "(data.download=true)."
            )


def _missing(directory: pathlib.Path) -> list[str]:
    return [name for name in FILES.values() if not (directory / name).is_file()]


def _candidates() -> list[tuple[str, pathlib.Path | None]]:
    """Implicit search locations in order, labelled for error messages (None = env var unset)."""
    env = os.environ.get(ENV_VAR)
    return [
        (f"${ENV_VAR}", pathlib.Path(env).expanduser() if env else None),
        ("system package", SYSTEM_DATA_DIR),
        ("user cache", user_cache_dir()),
    ]


def find_data_dir(path: str | None = None) -> pathlib.Path | None:
    """First directory holding all four files: `path`, $VI_LAB_DATA, system dir, user cache.

    An explicit `path` that lacks files is an error (DataFileError), not a reason to look elsewhere.
    Returns None when no implicit location holds all the files.
    """
    if path is not None:
        directory = pathlib.Path(path).expanduser()
        missing = _missing(directory)
        if missing:
            raise DataFileError(
                f"data.path={directory} does not hold the Fashion-MNIST files: missing "
                f"{', '.join(missing)}. " + HOW_TO_GET
            )
        return directory
    for _, directory in _candidates():
        if directory is not None and not _missing(directory):
            return directory
    return None


def _not_found_message() -> str:
    lines = ["Fashion-MNIST files not found. Looked in:"]
    for label, directory in _candidates():
        if directory is None:
            state = "not set"
        elif not directory.is_dir():
            state = f"{directory} (does not exist)"
        else:
            state = f"{directory} (missing {', '.join(_missing(directory))})"
        lines.append(f"  {label}: {state}")
    lines.append(HOW_TO_GET)
    return "\n".join(lines)


def _fetch(url: str, target: pathlib.Path) -> None:
    """Download `url` to `target` through a temporary file in the same directory."""
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
        raise DataFileError(f"Downloading {url} failed: {exc}. " + HOW_TO_GET) from exc
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def download(dest: str | os.PathLike, base_url: str = BASE_URL) -> pathlib.Path:
    """Fetch the four files from `base_url` (http(s):// or file://) into `dest` and verify them."""
    directory = pathlib.Path(dest).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataFileError(f"Cannot create download directory {directory}: {exc}.") from exc
    for name in FILES.values():
        _fetch(base_url.rstrip("/") + "/" + name, directory / name)
    _verify(directory)
    return directory


def load(path: str | None = None, download_if_missing: bool = False) -> dict[str, np.ndarray]:
    """Fashion-MNIST as uint8 arrays keyed like FILES, after checking every file's MD5.

    train_images (60000, 28, 28), train_labels (60000,), test_images (10000, 28, 28),
    test_labels (10000,). With `download_if_missing`, files that are not found are downloaded
    into `path` (if given) or the user cache.
    """
    try:
        directory = find_data_dir(path)
    except DataFileError:
        if not download_if_missing:
            raise
        directory = None
    if directory is None:
        if not download_if_missing:
            raise DataFileError(_not_found_message())
        directory = download(path if path is not None else user_cache_dir(), BASE_URL)
    else:
        _verify(directory)
    return {key: read_idx(directory / name) for key, name in FILES.items()}
