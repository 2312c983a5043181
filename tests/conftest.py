"""Shared fixtures: unique system names, guaranteed cleanup, and a leak check over /dev/shm."""

from __future__ import annotations

import os
import secrets

import pytest

from nt_memory.shm.system import PREFIX, SHM_DIR, remove_system

TEST_PREFIX = "t"


def unique_name(tag: str = "") -> str:
    return f"{TEST_PREFIX}{tag}{os.getpid()}{secrets.token_hex(3)}"


def _ours() -> set[str]:
    try:
        return {f for f in os.listdir(SHM_DIR) if f.startswith(f"{PREFIX}{TEST_PREFIX}")}
    except OSError:
        return set()


@pytest.fixture(scope="session", autouse=True)
def no_leaked_segments():
    """Fail the run if any test left a segment of a test system behind."""
    before = _ours()
    yield
    leaked = _ours() - before
    for f in leaked:
        try:
            os.unlink(os.path.join(SHM_DIR, f))
        except OSError:
            pass
    assert not leaked, f"tests leaked shared-memory segments: {sorted(leaked)}"


@pytest.fixture(scope="session", autouse=True)
def warm_kernels():
    """Compile (or load from cache) the kernels once, before any test spawns processes: each is
    compiled on its first use, and workers compiling it at once would spend a stress test's
    seconds compiling."""
    from nt_memory.tiers.l1 import HotCache

    name = unique_name("w")
    cache = HotCache.create(name, max_entries=64)
    try:
        cache.put("w", "k", b"v")
        cache.get("w", "k")
        cache.put_many("w", [("k", b"v")])
        cache.get_many("w", ["k"])
        assert ("w", "k") in cache
        cache.delete("w", "k")
        cache.rehash()
        cache.recover()
    finally:
        cache.close()
        cache.unlink()


@pytest.fixture
def name():
    """A unique system name; every segment of it is removed after the test, pass or fail."""
    n = unique_name()
    yield n
    remove_system(n)


@pytest.fixture
def mem_config(name, tmp_path):
    """The config ``mem`` opens: the defaults over a private storage path. A module that needs
    other settings overrides this fixture, never ``mem``."""
    from nt_memory import MemoryConfig

    return MemoryConfig(name=name, storage_path=str(tmp_path))


@pytest.fixture
def mem(mem_config):
    """The one MemorySystem fixture: opened from ``mem_config``, closed and unlinked after the test."""
    from nt_memory import MemorySystem

    m = MemorySystem.open(mem_config)
    yield m
    m.close()
    m.unlink()
