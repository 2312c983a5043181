"""Issue 10's small ones: every duration is checked, limits are clear errors, publish returns its
own message number, lock names are reclaimed, and gc never races an attach or a live member."""

from __future__ import annotations

import datetime
import fcntl
import math
import multiprocessing as mp
import os
import signal
import time

import pytest

from nt_memory import CacheConfig, MemoryConfig, MemorySystem
from nt_memory.coordination import locks as locks_mod
from nt_memory.errors import ConfigError, StaleToken
from nt_memory.shm.system import PREFIX, SHM_DIR, gc, list_systems, remove_system
from tests.multiprocess import coord_workers

CTX = mp.get_context("spawn")


@pytest.fixture
def mem_config(name, tmp_path):
    return MemoryConfig(name=name, storage_path=str(tmp_path), cache_config=CacheConfig(max_entries=64))


def test_recv_with_a_nan_timeout_is_refused_not_forever(mem):
    sub = mem.subscribe("t/a")
    t0 = time.monotonic()
    for bad in (math.nan, -1, "1", True):
        with pytest.raises(ConfigError, match="timeout"):
            sub.recv(timeout=bad)
    assert time.monotonic() - t0 < 1
    assert sub.recv(timeout=datetime.timedelta(milliseconds=10)) is None
    assert sub.recv(timeout=0) is None


def test_huge_durations_are_clear_errors_and_inf_means_none(mem):
    with pytest.raises(ConfigError, match="ttl"):
        mem.put("ns", "k", 1, ttl=1e300)
    assert mem.get("ns", "k") is None
    mem.put("ns", "k", 1, ttl=math.inf)
    assert mem.get("ns", "k") == 1
    with pytest.raises(ConfigError, match="lease"):
        mem.acquire_lock("l", lease=1e300)
    token = mem.acquire_lock("l", lease=math.inf)  # no lease
    mem.release_lock(token)
    with pytest.raises(ConfigError, match="timeout"):
        mem.acquire_lock("l", timeout=math.nan)


def test_extend_lock_keeps_a_lease_alive_and_refuses_a_lost_one(mem):
    token = mem.acquire_lock("l", lease=0.2)
    for _ in range(3):
        time.sleep(0.1)
        token = mem.locks.extend(token, 0.2)
    mem.release_lock(token)
    lost = mem.acquire_lock("l", lease=0.05)
    time.sleep(0.1)
    with pytest.raises(StaleToken):
        mem.locks.extend(lost, 1)


def test_lock_names_are_reclaimed_and_fences_still_grow(mem):
    first = mem.acquire_lock("a")
    mem.release_lock(first)
    for i in range(locks_mod.MAX_LOCKS + 200):
        mem.release_lock(mem.acquire_lock(f"name-{i}"))
    again = mem.acquire_lock("a")  # its slot went to another name meanwhile
    assert again.fence > first.fence
    mem.release_lock(again)
    assert len(mem.locks.holders()) <= locks_mod.MAX_LOCKS


@pytest.mark.multiprocess
def test_publish_returns_this_publishers_message_number(name, tmp_path):
    path = str(tmp_path)
    with MemorySystem.open(MemoryConfig(name=name, storage_path=path)) as mem:
        result = CTX.Queue()
        n = 20000
        procs = [CTX.Process(target=coord_workers.numbered_publisher, args=(name, path, n, result)) for _ in range(3)]
        for p in procs:
            p.start()
        numbers = [result.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(60)
        # The number publish() returned is the message's place on the topic: unique across the
        # publishers and rising within each (the first version sometimes returned the next one's).
        assert sorted(sum(numbers, [])) == list(range(3 * n))
        assert all(a < b for ns in numbers for a, b in zip(ns, ns[1:], strict=False))
        mem.unlink()


def test_gc_leaves_a_system_being_attached(name, tmp_path):
    with MemorySystem.open(MemoryConfig(name=name, storage_path=str(tmp_path))) as mem:
        mem.close()
        fd = os.open(os.path.join(SHM_DIR, f"{PREFIX}{name}.root"), os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # what an attach holds until it is registered
            reasons = {}
            assert name not in gc([name], on_skip=lambda n, why: reasons.setdefault(n, why))
            assert "attaching" in reasons[name]
        finally:
            os.close(fd)
        assert gc([name], dry_run=True) == [name] and name in list_systems()
        assert gc([name]) == [name] and name not in list_systems()


@pytest.mark.multiprocess
def test_gc_keeps_a_stopped_member_and_an_unflushed_journal(name, tmp_path):
    path = str(tmp_path)
    p = CTX.Process(target=coord_workers.open_put_and_die, args=(name, path, 100, True))
    p.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _stopped(p.pid):
            time.sleep(0.01)
        reasons = {}
        assert gc([name], on_skip=lambda n, why: reasons.setdefault(n, why)) == []
        assert f"pids {p.pid}" in reasons[name]  # stopped is alive
    finally:
        os.kill(p.pid, signal.SIGKILL)
        os.kill(p.pid, signal.SIGCONT)
        p.join(10)
    reasons = {}
    assert gc([name], on_skip=lambda n, why: reasons.setdefault(n, why)) == []
    assert "not in LMDB yet" in reasons[name]  # every member is dead, but their puts are not
    with MemorySystem.open(MemoryConfig(name=name, storage_path=path)) as mem:
        mem.flush()
        assert [mem.get("gc", f"k{i}") for i in range(100)] == list(range(100))
    assert gc([name]) == [name]
    remove_system(name)


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(") ", 1)[1][0] == "T"
