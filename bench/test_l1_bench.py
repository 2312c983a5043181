"""pytest-benchmark suites for L1 (``pytest bench --benchmark-only``). Tail latencies: l1_report.py."""

from __future__ import annotations

import secrets

import numpy as np
import pytest

from nt_memory.benchmarks.seed import key_arrays, njit_lookup_batch
from nt_memory.tiers.l1 import HotCache

NKEYS = 100_000
VALUE = b"v" * 32


@pytest.fixture(scope="module")
def cache():
    name = f"bench{secrets.token_hex(3)}"
    c = HotCache.create(name, max_entries=NKEYS)
    for i in range(NKEYS):
        c.put("agent", f"key{i}", VALUE)
    c.get("agent", "key1")
    yield c
    c.close()
    c.unlink()


@pytest.fixture(scope="module")
def plain_dict():
    return {("agent", f"key{i}"): VALUE for i in range(NKEYS)}


@pytest.mark.benchmark(group="l1.get")
def test_l1_get(benchmark, cache):
    benchmark(cache.get, "agent", "key4242")


@pytest.mark.benchmark(group="l1.get")
def test_dict_get_baseline(benchmark, plain_dict):
    benchmark(lambda: plain_dict.get(("agent", "key4242")))


@pytest.mark.benchmark(group="l1.put")
def test_l1_put(benchmark, cache):
    benchmark(cache.put, "agent", "key4242", VALUE)


@pytest.mark.benchmark(group="l1.njit-batch")
def test_njit_batch_1000_lookups(benchmark, cache):
    hashes, karr, klen = key_arrays(cache, "agent", [f"key{i}" for i in range(NKEYS)])
    order = np.random.default_rng(1).integers(0, NKEYS, 1000)
    handle = cache.njit_handle()
    njit_lookup_batch(handle, hashes, karr, klen, order)
    assert benchmark(njit_lookup_batch, handle, hashes, karr, klen, order) == 1000
