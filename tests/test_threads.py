"""Threads sharing one handle: no thread ever reads another key's value or a torn one.

Kernels run without the GIL, so a per-handle scratch buffer filled by two threads at once hands
one thread the other's value (issue 10: 136,254 of 1.76 M gets). Each thread here reads only its
own keys, whose values carry their key and a checksum.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from nt_memory import CacheConfig, MemoryConfig, MemorySystem
from nt_memory.tiers.l1 import HotCache
from tests.multiprocess.workers import checksummed, verify

THREADS = 4
KEYS = 64
SECONDS = 2.0


def _value(t: int, k: int, version: int) -> bytes:
    size = (8, 40, 200, 1500)[(t + k + version) % 4]
    return f"{t}:{k}:".encode() + checksummed(t * 1_000_003 + k * 1009 + version, size)


def _check(t: int, k: int, v) -> bool:
    prefix = f"{t}:{k}:".encode()
    return isinstance(v, bytes) and v.startswith(prefix) and verify(v[len(prefix) :])


def _hammer(get, put, get_many=None, put_many=None) -> tuple[int, int]:
    """Each thread writes and reads back its own keys, key by key or (``get_many``/``put_many``
    given) a batch at a time; returns (gets checked, wrong values)."""
    counts = [[0, 0] for _ in range(THREADS)]
    errors: list[BaseException] = []

    def run(t: int) -> None:
        try:
            deadline = time.monotonic() + SECONDS
            version = 0
            keys = [f"k{k}" for k in range(KEYS)]
            while time.monotonic() < deadline:
                version += 1
                changed = [k for k in range(KEYS) if (k + version) % 7 == 0]
                if put_many is not None and get_many is not None:
                    put_many(f"t{t}", [(keys[k], _value(t, k, version)) for k in changed])
                    got = get_many(f"t{t}", keys)
                else:
                    got = []
                    for k in range(KEYS):
                        if k in changed:
                            put(f"t{t}", keys[k], _value(t, k, version))
                        got.append(get(f"t{t}", keys[k]))
                for k, v in enumerate(got):
                    if v is not None:
                        counts[t][0] += 1
                        counts[t][1] += not _check(t, k, v)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    for t in range(THREADS):
        for k in range(KEYS):
            put(f"t{t}", f"k{k}", _value(t, k, 0))
    threads = [threading.Thread(target=run, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(SECONDS * 20)
    assert not any(th.is_alive() for th in threads)
    assert not errors, errors
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


def test_threads_sharing_a_hotcache_read_only_their_own_values(name):
    cache = HotCache.create(name, max_entries=THREADS * KEYS * 2, arena_bytes=4 << 20)
    try:
        checked, wrong = _hammer(cache.get, cache.put)
        assert checked > 10_000, checked
        assert wrong == 0, f"{wrong} of {checked} gets returned another key's value or a torn one"
    finally:
        cache.close()
        cache.unlink()


def test_threads_sharing_a_memory_system_read_only_their_own_values(name, tmp_path):
    cfg = MemoryConfig(name=name, storage_path=str(tmp_path), cache_config=CacheConfig(max_entries=4096))
    with MemorySystem.open(cfg) as mem:
        try:
            checked, wrong = _hammer(mem.get, mem.put)
            assert checked > 10_000, checked
            assert wrong == 0, f"{wrong} of {checked} gets returned another key's value or a torn one"
        finally:
            mem.unlink()


def test_threads_reading_through_lower_tiers_get_their_own_values(name, tmp_path):
    """A table far smaller than the keys: most gets miss L1 and go to the journal or LMDB."""
    cfg = MemoryConfig(name=name, storage_path=str(tmp_path), cache_config=CacheConfig(max_entries=32))
    with MemorySystem.open(cfg) as mem:
        try:
            checked, wrong = _hammer(mem.get, mem.put)
            assert checked > 1_000 and wrong == 0, (checked, wrong)
            assert mem.stats()["l1"]["evictions"] > 0
        finally:
            mem.unlink()


def test_threads_sharing_a_subscription_split_every_message_exactly_once(name, tmp_path):
    cfg = MemoryConfig(name=name, storage_path=str(tmp_path), cache_config=CacheConfig(max_entries=64))
    with MemorySystem.open(cfg) as mem:
        try:
            sub = mem.subscribe("t/x")
            n = 20_000
            got: list[list[int]] = [[] for _ in range(THREADS)]
            done = threading.Event()

            def receive(t: int) -> None:
                while True:
                    msg = sub.recv(timeout=0.2)
                    if msg is None:
                        if done.is_set():
                            return
                        continue
                    got[t].append(int.from_bytes(msg, "little"))

            threads = [threading.Thread(target=receive, args=(t,)) for t in range(THREADS)]
            for th in threads:
                th.start()
            for i in range(n):
                mem.publish("t/x", i.to_bytes(8, "little"))
            done.set()
            for th in threads:
                th.join(30)
            seen = sorted(x for g in got for x in g)
            assert len(seen) == len(set(seen)), "a message was delivered twice"
            assert sub.received + sub.dropped == n
            assert len(seen) == sub.received
        finally:
            mem.unlink()


def test_threads_sharing_a_memory_system_with_embeddings_and_locks(name, tmp_path):
    cfg = MemoryConfig(
        name=name, storage_path=str(tmp_path), embedding_dim=8, cache_config=CacheConfig(max_entries=512)
    )
    with MemorySystem.open(cfg) as mem:
        try:
            total = [0]
            errors: list[BaseException] = []

            def run(t: int) -> None:
                try:
                    rng = np.random.default_rng(t)
                    for i in range(200):
                        mem.put(f"t{t}", f"e{i % 20}", {"t": t, "i": i}, embedding=rng.normal(size=8))
                        with mem.lock("counter", timeout=10):
                            total[0] += 1
                        hits = mem.search_similar(f"t{t}", rng.normal(size=8), top_k=3)
                        assert all(h.namespace == f"t{t}" for h in hits)
                except BaseException as exc:  # noqa: BLE001
                    errors.append(exc)

            threads = [threading.Thread(target=run, args=(t,)) for t in range(THREADS)]
            for th in threads:
                th.start()
            for th in threads:
                th.join(120)
            assert not errors, errors
            assert total[0] == THREADS * 200
            for t in range(THREADS):
                assert {mem.get(f"t{t}", f"e{k}")["t"] for k in range(20)} == {t}
        finally:
            mem.unlink()


@pytest.mark.parametrize("entries", [THREADS * KEYS * 2, 32], ids=["in-l1", "mostly-below-l1"])
def test_threads_batching_through_one_memory_system_read_only_their_own_values(name, tmp_path, entries):
    """get_many and put_many (one compiled call per batch) from threads sharing one handle, with
    every key in L1, and with most batched gets missing L1 for the journal or LMDB."""
    cfg = MemoryConfig(name=name, storage_path=str(tmp_path), cache_config=CacheConfig(max_entries=entries))
    mem = MemorySystem.open(cfg)
    try:
        checked, wrong = _hammer(mem.get, mem.put, mem.get_many, mem.put_many)
        assert checked > 1_000, checked
        assert wrong == 0, f"{wrong} of {checked} batched gets returned another key's value or a torn one"
    finally:
        mem.close()
        mem.unlink()
