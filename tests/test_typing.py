"""The types reach users: a typed script passes ``mypy --strict``, and every wrong call in
tests/typing/wrong_calls.py (each line marked ``# E:``) is an error, and nothing else is. The
package is followed silently, as mypy treats an installed package."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).parent / "typing"
pytest.importorskip("mypy")


def _mypy(path: pathlib.Path) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--no-incremental", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return [line for line in out.stdout.splitlines() if ": error:" in line]


def test_a_typed_user_script_passes_mypy_strict():
    assert _mypy(HERE / "user_script.py") == []


def test_mypy_rejects_each_wrong_call_and_only_those():
    path = HERE / "wrong_calls.py"
    marked = {i for i, line in enumerate(path.read_text().splitlines(), 1) if line.rstrip().count("  # E: ")}
    errors = {int(re.match(r".*?:(\d+): error", e).group(1)) for e in _mypy(path)}
    assert marked and errors == marked  # ttl="soon" among them
