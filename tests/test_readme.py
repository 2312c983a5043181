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
    if "NatsServer" in code:
        from nt_memory.servers import nats_missing

        if nats_missing():
            pytest.skip(f"the cluster example needs a NATS server: {nats_missing()}")
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"README block {i} ({code.splitlines()[0]!r}) failed:\n{done.stderr[-3000:]}"
    finally:
        for name in _systems(code):  # a block that failed midway leaves nothing behind
            remove_system(name)


SHELL_LINES = [
    line.strip()
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    for line in block.splitlines()
    if line.strip() and not line.startswith("#")
]


def test_every_nt_memory_command_in_the_readme_is_a_real_one(monkeypatch):
    """Every ``nt-memory`` command of the README's shell blocks parses as written (no placeholder,
    no unknown command, suite or option), and the options it passes to a suite are the suite's
    own. Running them all is the bench's job: several take minutes."""
    import argparse
    import importlib
    import shlex

    from nt_memory.cli import BENCH_SUITES, build_parser

    class Parsed(Exception):
        pass

    parse = argparse.ArgumentParser.parse_args

    def parse_only(self, args=None, namespace=None):
        parse(self, args, namespace)  # exits 2 on an unknown option or a bad value
        raise Parsed

    commands = [shlex.split(part, comments=True) for line in SHELL_LINES for part in line.split("&&")]
    ours = [c[1:] for c in commands if c and c[0] == "nt-memory"]
    assert len(ours) >= 10
    for argv in ours:
        if "--help" in argv:
            done = subprocess.run([sys.executable, "-m", "nt_memory.cli", *argv], capture_output=True, timeout=120)
            assert done.returncode == 0, argv
            continue
        args, extra = build_parser().parse_known_args(argv)
        if args.command != "bench":
            assert not extra, argv
            continue
        suite = importlib.import_module(f"nt_memory.benchmarks.{BENCH_SUITES[args.suite][0]}")
        with monkeypatch.context() as m:
            m.setattr(argparse.ArgumentParser, "parse_args", parse_only)
            with pytest.raises(Parsed):
                suite.main(extra + (["--quick"] if args.quick else []) + (["--plot", args.plot] if args.plot else []))
