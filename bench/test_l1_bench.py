"""pytest-benchmark suites for L1 (``pytest bench --benchmark-only``). Tail latencies: l1_report.py."""

from __future__ import annotations

import secrets

import numpy as np
import pytest

from bench.l1_report import _njit_batch
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
    keys = [f"key{i}" for i in range(NKEYS)]
    kb = [cache.key_array("agent", k) for k in keys]
    karr = np.zeros((NKEYS, max(len(k) for k in kb)), np.uint8)
    for i, k in enumerate(kb):
        karr[i, : len(k)] = k
    klen = np.array([len(k) for k in kb], np.int64)
    hashes = np.array([cache.key_hash("agent", k) for k in keys], np.int64)
    order = np.random.default_rng(1).integers(0, NKEYS, 1000)
    out = np.zeros(cache.max_value_bytes + 8, np.uint8)
    handle = cache.njit_handle()
    _njit_batch(handle, hashes, karr, klen, order, out)
    assert benchmark(_njit_batch, handle, hashes, karr, klen, order, out) == 1000
