"""Finding, checking and downloading a dataset's files (vi_lab.data.source), on a made-up dataset.

Every failure is one line that names the file, where it was looked for and how to get it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib

import pytest

from vi_lab.data import source
from vi_lab.data.source import Checksum, DataFileError, Files

CONTENT = {"a": b"first file", "b": b"second file"}


@pytest.fixture
def files(tmp_path) -> Files:
    """A two-file dataset whose official copies are in tmp_path/official (its download URL)."""
    official = tmp_path / "official"
    official.mkdir()
    for key, content in CONTENT.items():
        (official / f"{key}.bin").write_bytes(content)
    return Files(
        title="Toy",
        folder="toy",
        names={key: f"{key}.bin" for key in CONTENT},
        checksums={key: Checksum("sha256", hashlib.sha256(c).hexdigest()) for key, c in CONTENT.items()},
        base_url=official.as_uri(),
        how_to_get="ask the toy shop",
        system_dir=tmp_path / "system",
    )


def fill(directory: pathlib.Path, content: dict[str, bytes] = CONTENT) -> pathlib.Path:
    directory.mkdir(parents=True, exist_ok=True)
    for key, data in content.items():
        (directory / f"{key}.bin").write_bytes(data)
    return directory


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_search_order(files, tmp_path, isolated_locations, monkeypatch):
    assert source.find(files) is None
    cache = fill(isolated_locations / "cache" / "vi_lab" / "toy")
    assert source.find(files) == cache
    system = fill(files.system_dir)
    assert source.find(files) == system
    monkeypatch.setenv(source.ENV_VAR, str(tmp_path / "env"))
    assert source.find(files) == system  # $VI_LAB_DATA/toy does not exist yet
    env = fill(tmp_path / "env" / "toy")
    assert source.find(files) == env
    explicit = fill(tmp_path / "explicit")
    assert source.find(files, str(explicit)) == explicit


def test_incomplete_folders_are_skipped_but_an_explicit_one_is_an_error(files, tmp_path, monkeypatch):
    fill(tmp_path / "env" / "toy", {"a": CONTENT["a"]})
    monkeypatch.setenv(source.ENV_VAR, str(tmp_path / "env"))
    system = fill(files.system_dir)
    assert source.find(files) == system
    with pytest.raises(DataFileError) as info:
        source.find(files, str(tmp_path / "env" / "toy"))
    message = one_line(info)
    assert f"data.path={tmp_path / 'env' / 'toy'}" in message and "missing b.bin." in message
    assert "ask the toy shop" in message


def test_nothing_found_says_where_it_looked_and_how_to_get_the_files(files, tmp_path, monkeypatch):
    fill(tmp_path / "env" / "toy", {"a": CONTENT["a"]})
    monkeypatch.setenv(source.ENV_VAR, str(tmp_path / "env"))
    with pytest.raises(DataFileError) as info:
        source.locate(files)
    message = one_line(info)
    assert f"$VI_LAB_DATA/toy: {tmp_path / 'env' / 'toy'} lacks b.bin" in message
    assert f"system package: {files.system_dir} does not exist" in message
    assert "user cache: " in message and "vi_lab/toy does not exist" in message
    assert "ask the toy shop" in message and "data.download=true fetches them from file://" in message
    assert "docs/datasets.md" in message


def test_checksum_mismatch_names_the_file_and_both_digests(files, tmp_path):
    directory = fill(tmp_path / "copy")
    source.locate(files, str(directory))  # the official content passes
    altered = b"second filf"  # one byte off: a negative control for the check above
    (directory / "b.bin").write_bytes(altered)
    with pytest.raises(DataFileError) as info:
        source.locate(files, str(directory))
    message = one_line(info)
    assert str(directory / "b.bin") in message
    assert hashlib.sha256(altered).hexdigest() in message and files.checksums["b"].digest in message
    assert "SHA256" in message and "ask the toy shop" in message


def test_checksum_of_decompressed_content(tmp_path):
    import gzip

    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(b"payload", mtime=1))
    content = Checksum("md5", hashlib.md5(b"payload").hexdigest(), of_content=True)
    assert source.file_digest(path, content) == content.digest
    assert source.file_digest(path, dataclasses.replace(content, of_content=False)) != content.digest


def test_download_into_the_user_cache_when_asked(files, isolated_locations):
    directory = source.locate(files, download_if_missing=True)
    assert directory == isolated_locations / "cache" / "vi_lab" / "toy"
    assert sorted(os.listdir(directory)) == ["a.bin", "b.bin"]  # no temporary files left
    assert (directory / "a.bin").read_bytes() == CONTENT["a"]


def test_download_checks_what_it_fetched(files, tmp_path):
    corrupt = dataclasses.replace(files, checksums={**files.checksums, "a": Checksum("sha256", "0" * 64)})
    with pytest.raises(DataFileError, match=r"a.bin: SHA256 is .* expected 0{64}"):
        source.download(corrupt, tmp_path / "dest")


def test_download_failure_is_one_line_and_leaves_no_temporary_file(files, tmp_path):
    dest = tmp_path / "dest"
    with pytest.raises(DataFileError, match=r"Downloading .*a.bin failed") as info:
        source.download(files, dest, base_url=(tmp_path / "no-such-mirror").as_uri())
    assert "ask the toy shop" in one_line(info)
    assert os.listdir(dest) == []


def test_no_download_where_none_is_possible(files):
    offline = dataclasses.replace(files, base_url=None)
    with pytest.raises(DataFileError) as info:
        source.locate(offline, download_if_missing=True)
    message = one_line(info)
    assert "not found" in message and "data.download" not in message
