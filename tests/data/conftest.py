"""Every data test looks only where it puts files: no $VI_LAB_DATA, a user cache of its own."""

from __future__ import annotations

import pytest

from vi_lab.data.source import ENV_VAR


@pytest.fixture(autouse=True)
def isolated_locations(tmp_path_factory, monkeypatch):
    """$VI_LAB_DATA unset and $XDG_CACHE_HOME in a temporary folder (the system folders stay: real data)."""
    root = tmp_path_factory.mktemp("locations")
    monkeypatch.setenv("XDG_CACHE_HOME", str(root / "cache"))
    monkeypatch.delenv(ENV_VAR, raising=False)
    return root
