"""The habits users bring from redis-py (issue 14): ttl/expire, incr, compare_and_set, get_many,
scan, pattern subscriptions; expired entries absent everywhere. Sync API; tests/test_aio.py has
the same through AsyncMemorySystem."""

from __future__ import annotations

import datetime
import math
import multiprocessing as mp
import time

import numpy as np
import pytest

from nt_memory import CacheConfig, ConfigError, MemoryConfig, ValueTooLarge
from nt_memory.tiers.l1 import HotCache
from tests.multiprocess import coord_workers as W

CTX = mp.get_context("spawn")


def _join(procs, timeout=120):
    for p in procs:
        p.join(timeout)
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0] * len(procs)


def test_ttl_reports_seconds_left_inf_or_none_and_expire_changes_it(mem):
    mem.put("ns", "forever", 1)
    mem.put("ns", "brief", 2, ttl=30)
    assert mem.ttl("ns", "forever") == math.inf
    assert 29 < mem.ttl("ns", "brief") <= 30
    assert mem.ttl("ns", "absent") is None
    assert mem.expire("ns", "forever", datetime.timedelta(seconds=60))
    assert 59 < mem.ttl("ns", "forever") <= 60 and mem.get("ns", "forever") == 1
    assert mem.expire("ns", "brief", None) and mem.ttl("ns", "brief") == math.inf
    assert not mem.expire("ns", "absent", 5) and mem.ttl("ns", "absent") is None
    assert mem.expire("ns", "brief", 0.05)
    time.sleep(0.1)
    assert mem.ttl("ns", "brief") is None and mem.get("ns", "brief") is None and not mem.expire("ns", "brief", 5)
    mem.flush()  # after the flusher moved it to LMDB, the answers are the same
    assert 58 < mem.ttl("ns", "forever") <= 60
    with pytest.raises(ConfigError, match="ttl"):
        mem.expire("ns", "forever", -1)
    with pytest.raises(ConfigError, match="ttl"):
        mem.expire("ns", "forever", "soon")
    assert mem.get("ns", "forever") == 1  # bad input stored nothing


def test_incr_counts_from_zero_keeps_the_ttl_and_refuses_non_integers(mem):
    assert mem.incr("ctr", "a") == 1
    assert mem.incr("ctr", "a", 41) == 42 and mem.get("ctr", "a") == 42
    assert mem.incr("ctr", "a", -50) == -8
    mem.put("ctr", "t", 5, ttl=30)
    assert mem.incr("ctr", "t") == 6 and 29 < mem.ttl("ctr", "t") <= 30
    for bad in (b"bytes", 1.5, "7", True, [1], np.arange(2)):
        mem.put("ctr", "bad", bad)
        with pytest.raises(TypeError, match="not an integer"):
            mem.incr("ctr", "bad")
    assert mem.get("ctr", "bad").tolist() == [0, 1]  # the failed incr changed nothing
    with pytest.raises(TypeError, match="amount"):
        mem.incr("ctr", "a", 1.0)
    view = mem.namespace("a1")
    assert view.incr("n") == 1 and view.incr("n", 2) == 3 and mem.get("swarm/a1", "n") == 3


def test_compare_and_set_swaps_only_from_the_expected_value(mem):
    assert mem.compare_and_set("ns", "k", None, {"v": 1})  # absent: None matches
    assert not mem.compare_and_set("ns", "k", None, {"v": 2})  # present now
    assert not mem.compare_and_set("ns", "k", {"v": 9}, {"v": 2})
    assert mem.compare_and_set("ns", "k", {"v": 1}, {"v": 2}) and mem.get("ns", "k") == {"v": 2}
    mem.put("ns", "obj", {"a": 1, "b": 2})
    assert mem.compare_and_set("ns", "obj", {"b": 2, "a": 1}, "swapped")  # equal JSON, other key order
    mem.put("ns", "arr", np.arange(4, dtype=np.int32))
    assert not mem.compare_and_set("ns", "arr", np.arange(4, dtype=np.int64), b"x")  # another dtype
    assert mem.compare_and_set("ns", "arr", np.arange(4, dtype=np.int32), b"x") and mem.get("ns", "arr") == b"x"
    assert not mem.compare_and_set("ns", "arr", b"y", b"z") and mem.get("ns", "arr") == b"x"
    assert mem.compare_and_set("ns", "t", None, 1, ttl=0.05)
    time.sleep(0.1)
    assert mem.compare_and_set("ns", "t", None, 2)  # expired is absent
    with pytest.raises(ValueTooLarge, match="new is"):
        mem.compare_and_set("ns", "k", {"v": 2}, b"x" * (mem.journal.capacity // 2))
    assert mem.get("ns", "k") == {"v": 2}


def test_incr_and_compare_and_set_are_atomic_across_three_processes(mem):
    n, procs_n = 300, 3
    ready, out = CTX.Barrier(procs_n), CTX.Queue()
    args = (mem.name, mem.config.path, n, ready, out)
    procs = [CTX.Process(target=W.incr_and_cas, args=args) for _ in range(procs_n)]
    for p in procs:
        p.start()
    _join(procs)
    assert mem.get("ctr", "hits") == n * procs_n  # no increment lost
    assert mem.get("ctr", "cas") == n * procs_n


def test_get_many_answers_in_order_from_every_tier(mem):
    mem.put_many("ns", {f"k{i}": i for i in range(50)})
    mem.put("ns", "blob", b"y" * 200_000)  # past L1: written through to LMDB
    keys = ["k3", "absent", "k0", "blob", "k49"]
    assert mem.get_many("ns", keys) == [3, None, 0, b"y" * 200_000, 49]
    assert mem.get_many("ns", keys[:2], default=-1) == [3, -1]
    assert mem.get_many("ns", []) == []
    with pytest.raises(ConfigError, match="keys must be"):
        mem.get_many("ns", "k1")
    assert mem.namespace("a").get_many(["x"]) == [None]


def test_put_many_takes_a_ttl_as_its_third_argument(mem):
    assert mem.put_many("ns", {"a": 1, "b": 2}, 30) == 2
    assert 29 < mem.ttl("ns", "a") <= 30
    assert mem.put_many("ns", [("c", b"x"), ("d", b"y")], datetime.timedelta(seconds=30)) == 2  # bytes: compiled
    assert 29 < mem.ttl("ns", "d") <= 30
    with pytest.raises(ConfigError, match="ttl"):
        mem.put_many("ns", [("e", b"x")], ttl=-1)
    with pytest.raises(ConfigError, match="pairs"):
        mem.put_many("ns", [("f", b"x"), ("g",)])
    assert mem.get_many("ns", ["e", "f", "g"]) == [None, None, None]  # bad input stored nothing


def test_scan_yields_live_keys_by_prefix_in_order_without_expired_ones(mem):
    for i in range(2500):  # more than a scan batch
        mem.put("ns", f"user:{i:05d}", i)
    mem.put("ns", "order:1", 1)
    mem.put("ns", "user:gone", 1, ttl=0.05)
    mem.put("other", "user:00001", 1)
    time.sleep(0.1)
    users = list(mem.scan("ns", "user:"))
    assert users == [f"user:{i:05d}" for i in range(2500)]
    assert list(mem.scan("ns", "order")) == ["order:1"]
    assert len(list(mem.scan("ns"))) == 2501 and mem.count("ns") == 2501 and len(mem) == 2502
    assert mem.keys("ns") == sorted(users + ["order:1"])
    view = mem.namespace("a1")
    view.put("x1", 1)
    view.put("y1", 1)
    assert list(view.scan("x")) == ["x1"] and len(view) == 2
    with pytest.raises(ConfigError, match="prefix"):
        list(mem.scan("ns", 5))


@pytest.fixture
def mem_config(name, tmp_path):
    return MemoryConfig(name=name, storage_path=str(tmp_path), cache_config=CacheConfig(max_entries=4096))


def test_an_expired_entry_is_absent_from_len_exists_scan_and_counted_on_read(mem):
    for i in range(20):
        mem.put("ns", f"short{i}", i, ttl=0.05)
        mem.put("ns", f"long{i}", i)
    assert len(mem.l1) == 40 and mem.stats()["l1"]["entries"] == 40
    time.sleep(0.1)
    assert len(mem.l1) == 20 and mem.stats()["l1"]["entries"] == 20  # not yet reclaimed, not counted
    assert not any(mem.exists("ns", f"short{i}") for i in range(20))
    stats = mem.stats()["l1"]
    assert stats["expirations"] == 20 and stats["slots_used"] == 20  # found expired on read: reclaimed
    assert mem.count("ns") == 20 and len(list(mem.scan("ns", "short"))) == 0 and len(mem.keys("ns")) == 20


def test_hot_cache_reclaims_what_a_read_finds_expired(name):
    cache = HotCache.create(name, max_entries=64)
    try:
        cache.put("ns", "a", b"1", ttl=0.05)
        cache.put("ns", "b", b"2")
        time.sleep(0.1)
        assert len(cache) == 1
        assert cache.get("ns", "a") is None
        assert cache.stats()["expirations"] == 1 and cache.stats()["slots_used"] == 1
        cache.put("ns", "a", b"3")  # a rewrite is never reclaimed as expired
        assert cache.get("ns", "a") == b"3" and len(cache) == 2
    finally:
        cache.close()
        cache.unlink()


def test_psubscribe_receives_matching_topics_made_before_and_after(mem):
    mem.publish("swarm/a/updates", "before")  # made, and published to, before the subscription
    sub = mem.psubscribe("swarm/*/updates")
    mem.publish("swarm/a/updates", 1)
    mem.publish("swarm/b/other", "no")
    mem.publish("swarm/b/updates", 2)  # a topic made after the subscription
    got = [sub.recv(timeout=1.0), sub.recv(timeout=1.0)]
    assert sorted(got) == [("swarm/a/updates", 1), ("swarm/b/updates", 2)]
    assert sub.recv(timeout=0.05) is None
    assert sub.received == 2 and sub.dropped == 0 and sorted(sub.topics) == ["swarm/a/updates", "swarm/b/updates"]
    sub.close()
    for bad in ("", "a b", 5, "x" * 81, "[unclosed"):
        with pytest.raises(ConfigError, match="pattern"):
            mem.psubscribe(bad)


def test_a_sleeping_psubscribe_wakes_for_a_topic_another_process_makes(mem):
    topics = ["desk/1/fills", "desk/2/fills", "desk/2/orders"]
    n = 500
    sub = mem.psubscribe("desk/?/fills")
    ready = CTX.Barrier(2)
    pub = CTX.Process(target=W.topic_publisher, args=(mem.name, mem.config.path, topics, n, ready))
    pub.start()
    ready.wait(30)
    got: dict[str, list[int]] = {}
    deadline = time.monotonic() + 60
    while sum(map(len, got.values())) + sub.dropped < 2 * n and time.monotonic() < deadline:
        found = sub.recv(timeout=5.0)
        if found is not None:
            got.setdefault(found[0], []).append(found[1]["i"])
    _join([pub])
    assert sorted(got) == ["desk/1/fills", "desk/2/fills"]
    assert sub.received + sub.dropped == 2 * n  # exact, as for plain subscriptions
    for values in got.values():
        assert values == sorted(values)
