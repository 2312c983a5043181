"""A put that raises stores nothing: with /dev/shm full when the embedding log needs a new chunk,
``put(..., embedding=)`` raises CapacityError and the value is in no tier (the first version kept
it in L1 and LMDB, with the vector missing from search).

/dev/shm is a private 24 MiB tmpfs in a mount namespace of the worker's own (``unshare``), so the
host's shared memory is never filled."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.multiprocess
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _namespaced(cmd: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            f"mount -t tmpfs -o size=24m tmpfs /dev/shm && {cmd}",
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_a_put_that_raises_for_lack_of_shared_memory_stores_nothing(tmp_path):
    if shutil.which("unshare") is None or _namespaced("true", 30).returncode != 0:
        pytest.skip("needs unshare and mount (root) for a private /dev/shm (CI runs as root)")
    proc = _namespaced(f"exec {sys.executable} -m tests.multiprocess.fullshm_worker {tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["raised"] == "CapacityError", out
    assert "/dev/shm" in out["message"]
    assert out["l1_or_journal"] is None and not out["l3"] and not out["l3_embedding"], out
    assert out["hits"] == [] and out["log_records"] == 0, out
    assert out["plain"] == 2
