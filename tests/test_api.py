"""docs/api.md's Python example runs as written and prints the report it promises."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def test_api_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    (code,) = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(), re.S)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(ROOT / "configs")  # the example's paths are the repository's
    exec(compile(code, "docs/api.md", "exec"), {})
    out = capsys.readouterr().out
    assert re.search(r"^5 decoder steps, valid log p\(x\) -\d+\.\d\d$", out, re.M), out
    for key in ("elbo_amortized", "elbo_refined", "log_px", "amortization_gap", "approximation_gap"):
        assert re.search(rf"^{key}: -?\d+\.\d\d ± \d+\.\d\d nats per point$", out, re.M), out
    assert (tmp_path / "runs" / "api-example" / "eval" / "gaps.json").is_file()
