"""pytest-benchmark suites for MemorySystem (``pytest bench --benchmark-only``)."""

from __future__ import annotations

import secrets

import lmdb
import pytest

from nt_memory import CacheConfig, MemoryConfig, MemorySystem


@pytest.fixture(scope="module")
def mem(tmp_path_factory):
    m = MemorySystem.open(
        MemoryConfig(
            name=f"bench{secrets.token_hex(3)}",
            storage_path=str(tmp_path_factory.mktemp("mem")),
            cache_config=CacheConfig(max_entries=10_000),
        )
    )
    m.put("agent", "hot", {"qty": 1})
    yield m
    m.close()
    m.unlink()


@pytest.mark.benchmark(group="memory.put")
def test_put_write_behind(benchmark, mem):
    benchmark(mem.put, "agent", "hot", {"qty": 1})


@pytest.mark.benchmark(group="memory.get")
def test_get_promoted(benchmark, mem):
    benchmark(mem.get, "agent", "hot")


@pytest.mark.benchmark(group="memory.get")
def test_lmdb_get_baseline(benchmark, tmp_path):
    env = lmdb.open(str(tmp_path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        txn.put(b"agent\0hot", b'{"qty":1}')
    with env.begin() as txn:
        benchmark(txn.get, b"agent\0hot")
    env.close()
