"""Pub/sub, locks and consensus between real processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import pytest

from nt_memory import Proposal
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
