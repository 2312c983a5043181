"""Many processes on one table: no torn read ever, and SIGKILLed writers wedge nobody."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time

import pytest

from nt_memory.tiers.l1 import HotCache
from tests.multiprocess import workers

pytestmark = pytest.mark.multiprocess
CTX = mp.get_context("spawn")


def _run(procs, timeout):
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(timeout)
        assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)


def _torn_read_stress(name, seconds, writers=2, readers=2, nkeys=64):
    cache = HotCache.create(name, max_entries=48, arena_bytes=1 << 20)
    try:
        result = CTX.Queue()
        procs = [CTX.Process(target=workers.writer, args=(name, nkeys, seconds, s, result)) for s in range(writers)]
        procs += [
            CTX.Process(target=workers.reader, args=(name, nkeys, seconds, 100 + s, result)) for s in range(readers)
        ]
        _run(procs, seconds + 60)
        rows = [result.get(timeout=5) for _ in procs]
        reads = sum(r[2] for r in rows if r[0] == "reader")
        torn = sum(r[3] for r in rows if r[0] == "reader")
        writes = sum(r[2] for r in rows if r[0] == "writer")
        assert torn == 0, f"{torn} torn reads out of {reads}"
        assert reads > 1000 and writes > 1000, (reads, writes)
        # The table is consistent afterwards: every value verifies, the count is exact.
        cache.rehash()
        present = [cache.get("stress", f"k{k}") for k in range(nkeys)]
        assert all(workers.verify(v) for v in present if v is not None)
        assert len(cache) == sum(v is not None for v in present) <= 48
        assert cache.stats()["evictions"] > 0
    finally:
        cache.close()
        cache.unlink()


def test_no_torn_reads_short(name):
    """Writers overwrite (and evict, capacity < keys) checksummed values of changing sizes while
    readers in other processes verify every read."""
    _torn_read_stress(name, seconds=3)


@pytest.mark.slow
def test_no_torn_reads_long(name):
    _torn_read_stress(name, seconds=60, writers=3, readers=3)


def _sigkill_loop(name, rounds, seed=1234):
    rnd = random.Random(seed)
    nkeys = 200
    cache = HotCache.create(name, max_entries=150, arena_bytes=1 << 20)
    try:
        for r in range(rounds):
            ready = CTX.Queue()
            p = CTX.Process(target=workers.kill_target, args=(name, nkeys, r, ready))
            p.start()
            try:
                ready.get(timeout=60)
                time.sleep(rnd.uniform(0.0, 0.05))
                os.kill(p.pid, signal.SIGKILL)
            finally:
                p.join(10)
            assert p.exitcode == -signal.SIGKILL
            # Afterwards every reader and writer proceeds within a bounded time.
            t0 = time.monotonic()
            for k in range(nkeys):
                v = cache.get("stress", f"k{k}")
                assert v is None or workers.verify(v), f"round {r}: damaged value for k{k}"
                cache.put("stress", f"k{k}", workers.checksummed(k, 64))
                assert workers.verify(cache.get("stress", f"k{k}"))
            assert time.monotonic() - t0 < 30
            assert len(cache) <= 150
        cache.rehash()
        present = sum(cache.get("stress", f"k{k}") is not None for k in range(nkeys))
        assert len(cache) == present
        return cache.stats()
    finally:
        cache.close()
        cache.unlink()


def test_sigkilled_writers_wedge_nobody(name):
    """Kill a writer at random moments, again and again: the next one repairs and carries on."""
    _sigkill_loop(name, rounds=8)


@pytest.mark.slow
def test_sigkilled_writers_soak(name):
    stats = _sigkill_loop(name, rounds=100)
    assert stats["repairs"] > 0, "no kill landed inside a write in 100 rounds"
