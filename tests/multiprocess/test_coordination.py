"""Pub/sub, locks and consensus between real processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import pytest

from nt_memory import Proposal
from nt_memory.shm import coord_layout as C
from tests.multiprocess import coord_workers as W

pytestmark = pytest.mark.multiprocess
CTX = mp.get_context("spawn")


def _join(procs, timeout=120):
    for p in procs:
        p.join(timeout)
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0] * len(procs)


def test_several_publishers_one_subscriber_in_order_and_complete(mem):
    n, pubs = 2000, 3
    ready = CTX.Barrier(pubs + 1)
    out = CTX.Queue()
    sub = CTX.Process(target=W.subscriber, args=(mem.name, mem.config.path, "swarm/updates", n * pubs, ready, out))
    sub.start()
    time.sleep(1.5)  # let it subscribe before anything is published
    procs = [
        CTX.Process(target=W.publisher, args=(mem.name, mem.config.path, "swarm/updates", w, n, ready))
        for w in range(pubs)
    ]
    for p in procs:
        p.start()
    got, dropped = out.get(timeout=120)
    _join(procs + [sub])
    assert dropped == 0 and len(got) == n * pubs  # a subscriber that keeps up loses nothing
    for w in range(pubs):
        assert [i for who, i in got if who == w] == list(range(n))  # per-publisher order


def test_lapped_subscriber_counts_exactly_what_it_lost(mem):
    n = 20_000  # ~20 bytes a message: far more than the 1 MiB ring holds while the reader sleeps
    ready = CTX.Barrier(2)
    out = CTX.Queue()
    sub = CTX.Process(target=W.slow_subscriber, args=(mem.name, mem.config.path, "fast", n, ready, out))
    sub.start()
    time.sleep(1.5)  # let it subscribe; it then sleeps 3 s while we publish past the ring's capacity
    ready.wait(30)
    for i in range(n * 3):
        mem.publish("fast", {"i": i})
    got, dropped = out.get(timeout=120)
    _join([sub])
    assert dropped > 0, "the subscriber was not lapped"
    assert len(got) + dropped == n * 3  # exact: received + dropped = published
    assert got == sorted(got) and got[-1] == n * 3 - 1


def test_publisher_killed_mid_message_does_not_wedge_the_topic(mem):
    sub = mem.subscribe("t")
    for _ in range(5):
        ready = CTX.Queue()
        p = CTX.Process(target=W.endless_publisher, args=(mem.name, mem.config.path, "t", ready))
        p.start()
        ready.get(timeout=60)
        time.sleep(0.05)
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)
    t0 = time.monotonic()
    mem.publish("t", {"after": True})
    assert time.monotonic() - t0 < 5
    last = None
    while (m := sub.try_recv()) is not None:
        last = m
    assert last == {"after": True}


def test_lock_mutual_exclusion_counter_ends_exact(mem):
    n, procs_n = 300, 3
    out = CTX.Queue()
    procs = [
        CTX.Process(target=W.counter_incrementer, args=(mem.name, mem.config.path, n, out)) for _ in range(procs_n)
    ]
    for p in procs:
        p.start()
    _join(procs, 180)
    assert mem.get("c", "n") == n * procs_n


def test_dead_holder_with_long_lease_is_taken_over_quickly(mem):
    ready = CTX.Queue()
    p = CTX.Process(target=W.lock_holder, args=(mem.name, mem.config.path, ready))
    p.start()
    ready.get(timeout=60)
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    t0 = time.monotonic()
    token = mem.acquire_lock("res", timeout=10)
    assert time.monotonic() - t0 < 2.0
    assert token.fence == 2
    mem.release_lock(token)


def test_concurrent_voters_decide_once(mem):
    c = mem.consensus
    agents = [f"agent_{i}" for i in range(5)]
    for a in agents:
        c.register_voter(a, 1.0)
    pid = c.submit_proposal(Proposal("agent_0", {"action": "rebalance"}, quorum=0.6))
    out = CTX.Queue()
    procs = [CTX.Process(target=W.voter, args=(mem.name, mem.config.path, pid, a, True, out)) for a in agents]
    for p in procs:
        p.start()
    _join(procs)
    statuses = [out.get(timeout=5)[1] for _ in agents]
    result = c.result(pid)
    assert result.status.name == "APPROVED"
    assert 3 <= result.votes <= 5 and result.approve_weight == result.votes
    assert statuses.count("APPROVED") >= 1


def test_subscriber_board_shows_each_subscribers_lag_across_processes(mem):
    """Each subscription's lag is visible from outside its process (``stats()``, what top and
    inspect show): two subscribers here and one in another process, each behind by what it has not
    taken; a closed one leaves the board, and a killed one's entry is dropped and reused."""
    parent, child = CTX.Pipe()
    reader = CTX.Process(target=W.partial_reader, args=(mem.config.name, mem.config.storage_path, "ticks", 3, child))
    reader.start()
    try:
        assert parent.poll(120) and parent.recv() == "subscribed"
        fast, slow = mem.subscribe("ticks"), mem.subscribe("ticks")
        for i in range(10):
            mem.publish("ticks", i)
        assert [fast.try_recv() for _ in range(10)] == list(range(10))
        assert [slow.try_recv() for _ in range(4)] == [0, 1, 2, 3]
        parent.send("go")
        assert parent.poll(60) and parent.recv() == 3
        rows = {(x["pid"], x["received"]): x for x in mem.stats()["topics"]["subscribers"] if x["topic"] == "ticks"}
        me = os.getpid()
        assert rows[(me, 10)]["lag"] == 0 and rows[(me, 4)]["lag"] == 6
        assert rows[(reader.pid, 3)]["lag"] == 7 and rows[(reader.pid, 3)]["dropped"] == 0
        assert len(rows) == 3
        slow.close()
        assert {(x["pid"], x["received"]) for x in mem.stats()["topics"]["subscribers"]} == {(me, 10), (reader.pid, 3)}
        os.kill(reader.pid, signal.SIGKILL)
        reader.join(30)
        left = mem.stats()["topics"]["subscribers"]
        assert [(x["pid"], x["lag"]) for x in left] == [(me, 0)]
        again = [mem.subscribe("ticks") for _ in range(2)]  # the freed and the dead entry are reused
        owners = mem.pubsub.board[:: C.SUB_WORDS]
        assert len(mem.stats()["topics"]["subscribers"]) == 3 and list(owners[:3] != 0) == [True] * 3
        assert not owners[3:].any() and len(again) == 2
    finally:
        if reader.is_alive():
            reader.kill()
            reader.join(30)
