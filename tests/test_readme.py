"""The README's examples of the habits and the asyncio API run as written (each in a process of
its own, as a reader would paste it)."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _block_after(heading: str) -> str:
    text = README.read_text()
    start = text.index(f"\n{heading}\n")
    match = re.compile(r"```python\n(.*?)```", re.S).search(text, start)
    assert match is not None, f"no python block after {heading!r}"
    return match.group(1)


@pytest.mark.parametrize("heading", ["### The habits of redis-py", "### asyncio"])
def test_the_readme_example_runs(heading):
    done = subprocess.run([sys.executable, "-c", _block_after(heading)], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
