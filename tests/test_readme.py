"""Every Python block of the README runs as written, in order, each in a fresh interpreter (as a
reader would paste it) in a temporary working directory."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

from nt_memory.shm.system import remove_system

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def _systems(code: str) -> set[str]:
    """The system names a block opens (``name="..."`` or ``HotCache.create("...")``)."""
    return set(re.findall(r'name="([^"]+)"', code)) | set(re.findall(r'HotCache\.create\("([^"]+)"', code))


def test_the_readme_has_its_examples():
    assert len(BLOCKS) >= 9
    headings = README.read_text()
    for heading in ("### The habits of redis-py", "### asyncio", "## Differences from the Rust crate"):
        assert f"\n{heading}\n" in headings


@pytest.mark.parametrize("i", range(len(BLOCKS)), ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_the_readme_block_runs(i, tmp_path):
    code = BLOCKS[i]
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"README block {i} ({code.splitlines()[0]!r}) failed:\n{done.stderr[-3000:]}"
    finally:
        for name in _systems(code):  # a block that failed midway leaves nothing behind
            remove_system(name)
