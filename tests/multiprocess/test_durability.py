"""Crash durability, concurrent writers, and a create/attach race, with real processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time

import pytest

from nt_memory import MemorySystem
from nt_memory.shm.system import remove_system
from tests.multiprocess import mem_workers

pytestmark = pytest.mark.multiprocess
CTX = mp.get_context("spawn")


def _crash_round(name, path, seed):
    parent, child = CTX.Pipe()
    p = CTX.Process(target=mem_workers.acking_writer, args=(name, path, child))
    p.start()
    acked = -1
    try:
        deadline = time.monotonic() + 60
        while acked < 200 and time.monotonic() < deadline:
            if parent.poll(0.5):
                acked = parent.recv()
        time.sleep(random.Random(seed).uniform(0, 0.05))
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)
        while parent.poll():
            acked = parent.recv()
    finally:
        if p.is_alive():
            p.kill()
    assert p.exitcode == -signal.SIGKILL
    return acked


def test_acknowledged_puts_survive_sigkill(name, tmp_path):
    """A child acknowledges each put through a pipe and is SIGKILLed at a random moment: a fresh
    process attaching (and draining the dead one's journal) finds every acknowledged put."""
    path = str(tmp_path)
    acked = _crash_round(name, path, 1)
    assert acked >= 200
    with MemorySystem.open(mem_workers.config(name, path)) as mem:
        missing = [i for i in range(acked + 1) if mem.get("crash", f"k{i}") != {"i": i, "pad": "x" * (i % 300)}]
        assert not missing, f"{len(missing)} acknowledged puts lost, first {missing[:5]}"
        mem.flush()
        mem.unlink()
    # And after a reboot (segments gone), LMDB alone has them all.
    with MemorySystem.open(mem_workers.config(name, path)) as mem:
        assert all(mem.get("crash", f"k{i}") is not None for i in range(acked + 1))
        mem.unlink()


def test_concurrent_writers_agree_across_tiers(name, tmp_path):
    """Several processes put, delete and get the same and different keys; afterwards each process's
    own keys hold its last write, and L1, the journal and LMDB agree on every shared key."""
    path = str(tmp_path)
    rounds, shared = 3000, 40
    result = CTX.Queue()
    procs = [
        CTX.Process(target=mem_workers.mixed_writer, args=(name, path, w, rounds, shared, result)) for w in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    with MemorySystem.open(mem_workers.config(name, path, max_entries=200)) as mem:
        for w in range(3):
            for k in range(50):
                last = max(r for r in range(rounds) if r % 50 == k)
                assert mem.get("own", f"w{w}-k{k}") == last
        seen = {k: mem.get("shared", f"k{k}") for k in range(shared)}
        mem.flush()
        for k in range(shared):
            kb = f"shared\0k{k}".encode()
            hit = mem.store.kv_get(kb)
            from nt_memory.tiers.codec import decode

            in_l3 = decode(hit[0]) if hit else None
            assert in_l3 == seen[k], f"k{k}: L3 {in_l3!r} != served {seen[k]!r}"
        mem.unlink()


def test_processes_opening_at_once_share_one_system(name, tmp_path):
    path = str(tmp_path)
    n = 4
    barrier = CTX.Barrier(n)
    result = CTX.Queue()
    procs = [CTX.Process(target=mem_workers.opener, args=(name, path, barrier, result)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    try:
        assert [p.exitcode for p in procs] == [0] * n
        creators = {result.get(timeout=5) for _ in range(n)}
        assert len(creators) == 1, "more than one system was created"
        with MemorySystem.open(mem_workers.config(name, path)) as mem:
            assert sum(mem.get("open", f"pid{s}") is not None for s in range(16)) >= 1
            mem.unlink()
    finally:
        remove_system(name)


@pytest.mark.slow
def test_acknowledged_puts_survive_sigkill_soak(name, tmp_path):
    path = str(tmp_path)
    total = 0
    for r in range(20):
        acked = _crash_round(name, path, r)
        with MemorySystem.open(mem_workers.config(name, path)) as mem:
            assert all(mem.get("crash", f"k{i}") is not None for i in range(acked + 1))
        total += acked
    remove_system(name)
    assert total > 0
