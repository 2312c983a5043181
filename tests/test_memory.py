"""MemorySystem: tiering, TTL semantics, large values, durability across a simulated reboot."""

from __future__ import annotations

import asyncio
import datetime
import os
import time

import numpy as np
import pytest

from nt_memory import CacheConfig, MemoryConfig, MemorySystem
from nt_memory.aio import AsyncMemorySystem
from nt_memory.errors import ConfigError, LockTimeout, SegmentClosed, StaleToken, TierError, ValueTooLarge
from nt_memory.shm.system import remove_system


@pytest.fixture
def config(name, tmp_path):
    return MemoryConfig(name=name, storage_path=str(tmp_path / "data"), cache_config=CacheConfig(max_entries=1000))


@pytest.fixture
def mem_config(config):
    return config


def test_put_get_delete_across_tiers(mem):
    mem.put("agent_1", "position", {"qty": 10})
    mem.put("agent_1", "raw", b"\x00\x01")
    mem.put("agent_1", "arr", np.arange(3.0))
    assert mem.get("agent_1", "position") == {"qty": 10}
    assert mem.get("agent_1", "raw") == b"\x00\x01"
    np.testing.assert_array_equal(mem.get("agent_1", "arr"), np.arange(3.0))
    mem.delete("agent_1", "position")
    assert mem.get("agent_1", "position") is None
    mem.flush()
    assert mem.get("agent_1", "position") is None
    assert ("agent_1", "raw") in mem


def test_eviction_under_pressure_every_key_readable_via_l3(mem):
    """Capacity 1k, 100k distinct puts: every key is still readable (from L3 or the journal)."""
    n = 100_000
    for i in range(n):
        mem.put("ns", f"k{i}", i)
    s = mem.stats()
    assert s["l1"]["entries"] <= 1000 and s["l1"]["evictions"] >= n - 1000
    missing = [i for i in range(n) if mem.get("ns", f"k{i}") != i]
    assert not missing, f"{len(missing)} keys lost, first {missing[:5]}"


def test_l1_miss_sees_unflushed_journal(config):
    """A value evicted from L1 before the flusher wrote it is found in the journal, and a pending
    delete hides an older L3 value."""
    with MemorySystem.open(config) as m:
        m.journal.stop()  # no flusher: everything stays in the journal
        m.put("ns", "old", 1)
        m.journal.flush()
        m.delete("ns", "old")
        for i in range(3000):
            m.put("ns", f"k{i}", i)
        assert m.journal.backlog_bytes() > 0
        assert all(m.get("ns", f"k{i}") == i for i in range(3000))
        assert m.get("ns", "old") is None
        m.unlink()


def test_cache_ttl_bounds_l1_stay_only(name, tmp_path):
    cfg = MemoryConfig(name=name, storage_path=str(tmp_path), cache_config=CacheConfig(max_entries=100, ttl=0.05))
    with MemorySystem.open(cfg) as m:
        m.put("ns", "k", "v")
        time.sleep(0.1)
        hits_before = m.stats()["l1"]["hits"]
        assert m.get("ns", "k") == "v"  # from L3 (or the journal), then promoted
        assert m.get("ns", "k") == "v"
        assert m.stats()["l1"]["hits"] == hits_before + 1
        m.unlink()


def test_put_ttl_bounds_the_data_everywhere(mem):
    mem.put("ns", "short", "v", ttl=0.05)
    mem.flush()
    time.sleep(0.1)
    assert mem.get("ns", "short") is None
    mem.l1.delete("ns", "short")
    assert mem.get("ns", "short") is None  # L3 has it, expired


def test_large_values_bypass_l1_and_come_back(config):
    with MemorySystem.open(config, journal_bytes=4 << 20) as m:
        medium = np.arange(200_000, dtype=np.float64)  # 1.6 MB: journal, not L1
        huge = os.urandom(5 << 20)  # over half the journal: written through to LMDB
        m.put("models", "weights", medium)
        m.put("models", "blob", huge)
        assert ("models", "weights") not in m.l1 and ("models", "blob") not in m.l1
        out = m.get("models", "weights")
        np.testing.assert_array_equal(out, medium)
        assert not out.flags.writeable  # a zero-copy view of the bytes LMDB returned
        assert m.get("models", "blob") == huge
        m.put("models", "weights", 1)  # a small value replaces a large one
        assert m.get("models", "weights") == 1
        m.unlink()


def test_value_over_max_memory_is_refused(name, tmp_path):
    cfg = MemoryConfig(name=name, storage_path=str(tmp_path), max_memory_bytes=16 << 20, journal_bytes=1 << 20)
    with MemorySystem.open(cfg, cache_config=CacheConfig(max_entries=100)) as m:
        m.put("ns", "k", 1)
        with pytest.raises(ValueTooLarge, match="max_memory_bytes"):
            m.put("ns", "k", b"x" * (17 << 20))
        assert m.get("ns", "k") == 1
        m.unlink()


def test_reboot_durability_after_flush(config):
    with MemorySystem.open(config) as m:
        for i in range(2000):
            m.put("ns", f"k{i}", {"i": i})
        m.flush()
        m.unlink()  # what a reboot does to shared memory
    with MemorySystem.open(config) as m:
        assert all(m.get("ns", f"k{i}") == {"i": i} for i in range(2000))
        m.unlink()


def test_sync_durability_is_committed_when_put_returns(name, tmp_path):
    cfg = MemoryConfig(name=name, storage_path=str(tmp_path), durability="sync")
    with MemorySystem.open(cfg, cache_config=CacheConfig(max_entries=100)) as m:
        m.journal.stop()  # no flusher thread: the put itself must make the record durable
        m.put("ns", "k", 1)
        assert m.journal.head == m.journal.tail  # the journal's record is committed in LMDB
        assert m.store.kv_get(b"ns\0k") is not None
        m.delete("ns", "k")
        assert m.store.kv_get(b"ns\0k") is None and m.get("ns", "k") is None
        m.unlink()


def test_l3_map_grows_when_full(name, tmp_path):
    cfg = MemoryConfig(name=name, storage_path=str(tmp_path), l3_map_bytes=1 << 20, enable_compression=False)
    with MemorySystem.open(cfg, cache_config=CacheConfig(max_entries=100)) as m:
        for i in range(64):
            m.put("ns", f"k{i}", os.urandom(50_000))
        m.flush()
        assert m.stats()["l3"]["map_bytes"] > 1 << 20
        assert m.store.count("kv") == 64
        m.unlink()


def test_compression_really_stores_fewer_bytes(name, tmp_path):
    cfg = MemoryConfig(name=name, storage_path=str(tmp_path))
    with MemorySystem.open(cfg, cache_config=CacheConfig(max_entries=100)) as m:
        m.put("ns", "k", b"a" * 100_000)
        m.flush()
        raw = m.store.get("kv", b"ns\0k")
        assert len(raw) < 5_000
        m.l1.delete("ns", "k")
        assert m.get("ns", "k") == b"a" * 100_000
        m.unlink()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "bad name"},
        {"durability": "eventually"},
        {"max_memory_bytes": 10},
        {"embedding_dim": 0},
        {"journal_bytes": 1},
        {"enable_compression": "yes"},
        {"cache_config": {"max_entries": 5}},
        {"storage_path": ""},
    ],
)
def test_invalid_config_values(kwargs):
    with pytest.raises(ConfigError):
        MemoryConfig(**kwargs)


@pytest.mark.parametrize("kwargs", [{"max_entries": 0}, {"ttl": -1}, {"ttl": "1h"}, {"max_value_bytes": 0}])
def test_invalid_cache_config(kwargs):
    with pytest.raises(ConfigError):
        CacheConfig(**kwargs)


def test_footprint_over_max_memory_is_refused(name, tmp_path):
    with pytest.raises(ConfigError, match="max_memory_bytes"):
        MemorySystem.open(
            MemoryConfig(
                name=name,
                storage_path=str(tmp_path),
                max_memory_bytes=16 << 20,
                cache_config=CacheConfig(max_entries=1_000_000),
            )
        )
    assert not os.path.exists(f"/dev/shm/ntm.{name}.root")


def test_unwritable_storage_path(name):
    """/proc refuses new directories even to root, so this holds for any user."""
    with pytest.raises(ConfigError, match="storage_path"):
        MemorySystem.open(MemoryConfig(name=name, storage_path="/proc/nt-memory-test/data"))
    assert not os.path.exists(f"/dev/shm/ntm.{name}.root")


def test_storage_path_is_a_file(name, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises((ConfigError, TierError)):
        MemorySystem.open(MemoryConfig(name=name, storage_path=str(f)))
    assert not os.path.exists(f"/dev/shm/ntm.{name}.root")


def test_attach_with_another_storage_path_is_refused(mem, tmp_path):
    with pytest.raises(ConfigError, match="differs"):
        MemorySystem.open(MemoryConfig(name=mem.name, storage_path=str(tmp_path / "elsewhere")))


def test_close_twice_and_use_after_close(config):
    m = MemorySystem.open(config)
    m.close()
    m.close()
    with pytest.raises(SegmentClosed):
        m.flush()
    with pytest.raises(SegmentClosed):
        m.get("ns", "k")
    m.unlink()


def test_async_facade(config):
    async def main():
        mem = await AsyncMemorySystem.open(config)
        try:
            await mem.put("ns", "k", {"v": 1})
            await mem.put("ns", "t", 2, ttl=30)
            assert await mem.get("ns", "k") == {"v": 1}
            assert await mem.get("ns", "t") == 2
            await mem.delete("ns", "k")
            assert await mem.get("ns", "k") is None
            await mem.flush()
            assert (await mem.stats())["journal"]["backlog_bytes"] == 0
        finally:
            await mem.close()
            mem.unlink()

    asyncio.run(main())
    remove_system(config.name)


def test_two_handles_in_one_process_share_one_lmdb_environment(config):
    a = MemorySystem.open(config)
    b = MemorySystem.open(config)
    try:
        assert a.store is b.store
        a.put("ns", "k", 1)
        b.flush()
        a.close()  # must not close the environment under b
        assert b.store.kv_get(b"ns\0k") is not None
        assert b.get("ns", "k") == 1
    finally:
        a.close()
        b.close()
        b.unlink()


def test_put_nowait_stores_nothing_when_it_would_wait(config):
    with MemorySystem.open(config, durability="sync") as mem:
        assert mem.put_nowait("ns", "k", 1) is False  # sync means a disk commit: would block
        assert mem.get("ns", "k") is None
        mem.unlink()
    with MemorySystem.open(config) as mem:
        assert mem.put_nowait("ns", "k", 1) is True and mem.get("ns", "k") == 1
        assert mem.put_nowait("ns", "e", 2, embedding=np.ones(128)) is False
        assert mem.get("ns", "e") is None and mem.l2.count == 0
        beat = next(m for m in mem.system.members.members() if m.slot == mem.system.slot).heartbeat_ns
        assert time.time_ns() - beat < 5e9
        mem.unlink()


def test_the_flusher_drains_on_its_own_without_errors(mem):
    """Nobody calls flush: the flusher thread drains each batch of puts by itself, and a drain that
    succeeds leaves no error behind (a TypeError after every drain once hid here: the flusher then
    slept a second each time and stats() always showed it)."""
    for batch in range(3):
        for i in range(50):
            mem.put("ns", f"k{batch}.{i}", {"i": i})
        deadline = time.monotonic() + 10
        while mem.stats()["journal"]["backlog_bytes"] and time.monotonic() < deadline:
            time.sleep(0.005)
        journal = mem.stats()["journal"]
        assert journal["backlog_bytes"] == 0 and journal["this_process_flushes"]
        time.sleep(0.02)  # past the drain's own bookkeeping
        assert mem.stats()["journal"]["last_error"] is None
    assert mem.stats()["journal"]["drained_records_here"] >= 150


def test_a_process_that_does_not_flush_looks_at_the_flusher_a_few_times_a_second(config):
    """The second process's thread only watches for a dead or stalled flusher. Each look takes its
    GIL, and 20 a second (every 50 ms, with a repair pass each time) lengthened a sleeping
    subscriber's p99 by half; it looks every STANDBY_S and leaves repairs to the flusher, and
    still takes the role over when the flusher goes."""
    from nt_memory.tiers.journal import STANDBY_S, TAKEOVER_S

    first = MemorySystem.open(config)
    second = MemorySystem.open(config)
    try:
        assert first.stats()["journal"]["this_process_flushes"]
        before = second.stats()["journal"]["standby_looks_here"]
        time.sleep(1.0)
        looks = second.stats()["journal"]["standby_looks_here"] - before
        assert 1 <= looks <= 1.0 / STANDBY_S + 2
        first.close()
        deadline = time.monotonic() + TAKEOVER_S + 10 * STANDBY_S
        while not second.stats()["journal"]["this_process_flushes"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert second.stats()["journal"]["this_process_flushes"]
        second.put("ns", "k", b"v")
        second.flush(10)
    finally:
        first.close()
        second.close()
        second.unlink()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_drained_lmdb_matches_a_model_of_interleaved_puts_embeddings_and_deletes(name, tmp_path, seed):
    """The flusher writes runs of puts with one ``putmulti`` per database and deletes between
    them: after a drain of many batches LMDB holds exactly what the last write of each key says,
    its embedding included (a plain put keeps the key's embedding; a delete drops both)."""
    rng = np.random.default_rng(seed)
    cfg = MemoryConfig(name=name, storage_path=str(tmp_path), embedding_dim=4, enable_compression=bool(seed % 2))
    model_kv: dict[str, object] = {}
    model_emb: dict[str, bytes] = {}
    with MemorySystem.open(cfg, cache_config=CacheConfig(max_entries=1000)) as m:
        m.journal.stop()  # the batches are drained below, many records at a time
        for step in range(3000):
            key = f"k{int(rng.integers(0, 12))}"
            op = rng.random()
            if op < 0.35:
                value = {"step": step, "pad": "x" * int(rng.integers(0, 300))}
                m.put("ns", key, value)
                model_kv[key] = value
            elif op < 0.75:
                vec = rng.normal(size=4).astype(np.float32)
                m.put("ns", key, step, embedding=vec)
                model_kv[key], model_emb[key] = step, vec.tobytes()
            else:
                m.delete("ns", key)
                model_kv.pop(key, None)
                model_emb.pop(key, None)
            if rng.random() < 0.01:
                while m.journal.drain():
                    pass
        while m.journal.drain():
            pass
        assert m.journal.head == m.journal.tail
        for i in range(12):
            key = f"k{i}"
            kb = f"ns\0{key}".encode()
            assert (m.store.kv_get(kb) is not None) == (key in model_kv), key
            assert m.store.get("embeddings", kb) == model_emb.get(key), key
        m.unlink()
    with MemorySystem.open(cfg, cache_config=CacheConfig(max_entries=1000)) as m:  # from LMDB alone
        for i in range(12):
            assert m.get("ns", f"k{i}") == model_kv.get(f"k{i}")
        m.unlink()


def test_exists_sees_live_values_in_every_tier_and_never_an_expired_one(mem):
    mem.put("agent_1", "live", b"x")
    mem.put("agent_1", "falsy", b"")  # a stored empty value exists
    mem.put("agent_1", "brief", b"y", ttl=datetime.timedelta(milliseconds=50))
    assert mem.exists("agent_1", "live") and mem.exists("agent_1", "falsy") and mem.exists("agent_1", "brief")
    assert not mem.exists("agent_1", "absent") and not mem.exists("agent_2", "live")
    time.sleep(0.1)
    assert not mem.exists("agent_1", "brief")
    mem.delete("agent_1", "live")
    assert not mem.exists("agent_1", "live")
    view = mem.namespace("a7")
    view.put("k", 1)
    assert view.exists("k") and not view.exists("other")


def test_extend_lock_keeps_a_held_lock_and_refuses_a_lost_one(mem):
    token = mem.acquire_lock("res", timeout=1.0, lease=0.2)
    time.sleep(0.1)
    assert mem.extend_lock(token, datetime.timedelta(seconds=1)) == token
    time.sleep(0.2)  # past the first lease: the extension holds it
    with pytest.raises(LockTimeout):
        mem.acquire_lock("res", timeout=0.05)
    short = mem.extend_lock(token, 0.05)
    time.sleep(0.15)
    other = mem.acquire_lock("res", timeout=1.0)  # the lease ran out: taken over
    assert other.fence > short.fence
    with pytest.raises(StaleToken):
        mem.extend_lock(token, 1.0)
    mem.release_lock(other)
    with pytest.raises(ConfigError, match="lease"):
        mem.extend_lock(mem.acquire_lock("res", timeout=1.0), -1)
