"""A study folder belongs to one Optuna study: one storage, one study name.

Trial folders are named by trial number (`trial_0007/`), and numbers restart at 0 in
every new study. So a folder that held the trials of one study must not take those of
another (the same name in a new storage, or a study deleted and created again): the first
run writes study.json with the storage (`StorageLocation.describe`, password hidden) and
the study name, and a later run that names another study or storage for the same folder
is refused before the storage is opened. The same URL from `--storage` or from
$VI_LAB_STORAGE is the same storage. A folder from before this record is adopted when the
study lives in the folder's own file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from vi_lab.config import ConfigError
from vi_lab.study.storage import StorageLocation

FILENAME = "study.json"


def _record(location: StorageLocation, study_name: str) -> dict[str, str]:
    return {"storage": location.describe(source=False), "study": study_name}


def check_study_folder(
    study_dir: Path, location: StorageLocation, study_name: str, *, own_file: bool
) -> None:
    """Refuse a study folder that belongs to another (storage, study); writes nothing.

    `own_file`: the storage is the folder's own SQLite or journal file.
    """
    record = _record(location, study_name)
    path = study_dir / FILENAME
    if path.is_file():
        bound = json.loads(path.read_text())
        if bound != record:
            raise ConfigError(
                f"{study_dir} holds the trials of study {bound.get('study')!r} in {bound.get('storage')}, "
                f"not of {study_name!r} in {record['storage']}: "
                "pass another root= or name= to keep them apart"
            )
        return
    trials = sorted(p.name for p in study_dir.glob("trial_*"))
    if trials and not own_file:
        raise ConfigError(
            f"{study_dir} already holds trial folders ({trials[0]}, ...) of an unrecorded study: "
            "pass another root= or name=, or move them away"
        )


def bind_study_folder(study_dir: Path, location: StorageLocation, study_name: str, *, own_file: bool) -> None:
    """Record (storage, study) in study_dir/study.json, or check that it is the one recorded there."""
    check_study_folder(study_dir, location, study_name, own_file=own_file)
    path = study_dir / FILENAME
    if path.is_file():
        return
    temporary = path.with_name(f".{FILENAME}.{os.getpid()}")  # whole or absent: workers may start together
    temporary.write_text(json.dumps(_record(location, study_name), indent=2) + "\n")
    os.replace(temporary, path)
