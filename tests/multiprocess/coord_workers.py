"""Workers for coordination tests (spawned; they receive names and paths only)."""

from __future__ import annotations

import os
import time

from nt_memory import MemoryConfig, MemorySystem, Vote


def _open(name, path, label):
    return MemorySystem.open(MemoryConfig(name=name, storage_path=path), label=label)


def publisher(name, path, topic, who, n, ready):
    mem = _open(name, path, f"pub-{who}")
    try:
        ready.wait(30)
        for i in range(n):
            mem.publish(topic, {"who": who, "i": i})
    finally:
        mem.close()


def subscriber(name, path, topic, expect, ready, out):
    mem = _open(name, path, "sub")
    try:
        sub = mem.subscribe(topic)
        ready.wait(30)
        got = []
        deadline = time.monotonic() + 60
        while len(got) + sub.dropped < expect and time.monotonic() < deadline:
            m = sub.recv(timeout=1.0)
            if m is not None:
                got.append((m["who"], m["i"]))
        out.put((got, sub.dropped))
    finally:
        mem.close()


def slow_subscriber(name, path, topic, expect, ready, out):
    """Subscribes, then sleeps while publishers lap it, then drains."""
    mem = _open(name, path, "slow-sub")
    try:
        sub = mem.subscribe(topic)
        ready.wait(30)
        time.sleep(3)
        got = []
        while True:
            m = sub.recv(timeout=1.0)
            if m is None:
                break
            got.append(m["i"])
        out.put((got, sub.dropped))
    finally:
        mem.close()


def endless_publisher(name, path, topic, ready):
    mem = _open(name, path, "victim")
    ready.put(os.getpid())
    i = 0
    while True:
        mem.publish(topic, b"x" * (i % 500))
        i += 1


def counter_incrementer(name, path, n, out):
    """Increments a counter kept in L1 with a non-atomic read-modify-write under the lock."""
    mem = _open(name, path, "incr")
    try:
        for _ in range(n):
            with mem.lock("counter", timeout=30):
                v = mem.get("c", "n", 0)
                mem.put("c", "n", v + 1)
        out.put(os.getpid())
    finally:
        mem.close()


def lock_holder(name, path, ready):
    mem = _open(name, path, "holder")
    mem.acquire_lock("res", timeout=5, lease=3600)
    ready.put(os.getpid())
    time.sleep(3600)


def voter(name, path, pid, agent, approve, out):
    mem = _open(name, path, agent)
    try:
        r = mem.consensus.vote(Vote(pid, agent, approve))
        out.put((agent, r.status.name))
    finally:
        mem.close()


def decide_and_die(name: str, path: str, conn) -> None:
    """Cast the deciding vote, and die (os._exit, like a SIGKILL: nothing runs after) as the
    decision is being logged to L3."""
    import os

    from nt_memory import MemoryConfig, MemorySystem, Proposal, Vote
    from nt_memory.coordination.consensus import Consensus

    mem = MemorySystem.open(MemoryConfig(name=name, storage_path=path), label="decider")
    mem.consensus.register_voter("a", 1.0)
    mem.consensus.register_voter("b", 1.0)
    pid = mem.consensus.submit_proposal(Proposal("a", {"act": "buy"}, quorum=0.5))
    conn.send(pid)

    def die(self, result):
        os._exit(0)

    Consensus._log = die
    mem.consensus.vote(Vote(pid, "a", approve=True))
    os._exit(1)  # not reached: the vote decides


def hold_everything_and_stop(name: str, path: str, conn) -> None:
    """Take every internal lock word (a topic's append lock, the topic directory, an L1 stripe, the
    journal's append lock, the embedding log, the lock table, the consensus state) the way a
    process stopped in the middle of each would hold it, then SIGSTOP ourselves."""
    import signal

    import numpy as np

    from nt_memory import MemoryConfig, MemorySystem
    from nt_memory.coordination import consensus
    from nt_memory.kernels.layout.ring import RING_LOCK_IDX
    from nt_memory.kernels.lockword import lockword_acquire
    from nt_memory.shm import coord_layout as C
    from nt_memory.shm import embed_layout as E

    mem = MemorySystem.open(MemoryConfig(name=name, storage_path=path, embedding_dim=4), label="staller")
    mem.journal.stop()
    mem.put("vec", "v", 1, embedding=np.ones(4))
    mem.subscribe("t/x")
    owner = mem.system.owner
    held = [
        lockword_acquire(mem.pubsub.topic("t/x").ring, RING_LOCK_IDX, owner),
        lockword_acquire(mem.pubsub.ctl, C.CTL_LOCK_IDX, owner),
        lockword_acquire(mem.l2.ctl, E.LOCK_IDX, owner),
        lockword_acquire(mem.locks.ctl, C.CTL_LOCK_IDX, owner),
        lockword_acquire(mem.consensus.words, consensus.C_LOCK, owner),
        lockword_acquire(mem.journal.ring, RING_LOCK_IDX, owner),
    ]
    mem.l1.lock_stripe(mem.l1.key_hash("ns", "stuck"))
    conn.send(("holding", all(held)))
    os.kill(os.getpid(), signal.SIGSTOP)
    os._exit(0)  # continued: the test is done with us


def numbered_publisher(name: str, path: str, n: int, result) -> None:
    """Publish ``n`` messages, reporting the number publish() returned for each."""
    from nt_memory import MemoryConfig, MemorySystem

    mem = MemorySystem.open(MemoryConfig(name=name, storage_path=path), label="publisher")
    try:
        result.put([mem.publish("t/n", {"pid": os.getpid(), "i": i}) for i in range(n)])
    finally:
        mem.close()


def open_put_and_die(name: str, path: str, n: int, stop: bool) -> None:
    """Open, put ``n`` keys with no flusher running (``stop``: then SIGSTOP ourselves, else die)."""
    import signal

    from nt_memory import MemoryConfig, MemorySystem

    mem = MemorySystem.open(MemoryConfig(name=name, storage_path=path), label="gc-target")
    mem.journal.stop()
    for i in range(n):
        mem.put("gc", f"k{i}", i)
    if stop:
        os.kill(os.getpid(), signal.SIGSTOP)
    os._exit(0)


def lock_hammer(name: str, path: str, hold_s: float, ready, stop, out) -> None:
    """Take "hot" again the moment it is released, holding it ``hold_s`` each time (busy, not
    sleeping): a waiter that only ever wakes after a release would never find it free."""
    mem = _open(name, path, "hammer")
    n = 0
    try:
        ready.put(os.getpid())
        while not stop.is_set():
            with mem.lock("hot", timeout=30):
                end = time.perf_counter() + hold_s
                while time.perf_counter() < end:
                    pass
            n += 1
        out.put(n)
    finally:
        mem.close()


def owner_word_and_wait(name: str, path: str, conn) -> None:
    """Report this member's owner word, then sit still (to be stopped or killed)."""
    mem = _open(name, path, "claimer")
    conn.send(mem.system.owner)
    time.sleep(3600)


def incr_and_cas(name: str, path: str, n: int, ready, out) -> None:
    """``n`` incr and ``n`` successful compare_and_set increments of shared counters."""
    mem = _open(name, path, "incr-cas")
    try:
        ready.wait(30)
        for _ in range(n):
            mem.incr("ctr", "hits")
            while True:  # a CAS loop, as callers write one
                cur = mem.get("ctr", "cas")
                if mem.compare_and_set("ctr", "cas", cur, (cur or 0) + 1):
                    break
        out.put(os.getpid())
    finally:
        mem.close()


def topic_publisher(name: str, path: str, topics: list, n: int, ready) -> None:
    """``n`` numbered messages to each of ``topics`` (made here, after the subscriber started)."""
    mem = _open(name, path, "pattern-pub")
    try:
        ready.wait(30)
        for i in range(n):
            for t in topics:
                mem.publish(t, {"topic": t, "i": i})
    finally:
        mem.close()


def timed_holder(name: str, path: str, hold_s: float, ready) -> None:
    """Hold lock "book" for ``hold_s`` seconds, then release it."""
    mem = _open(name, path, "timed-holder")
    try:
        token = mem.acquire_lock("book", timeout=5)
        ready.set()
        time.sleep(hold_s)
        mem.release_lock(token)
    finally:
        mem.close()


def paced_publisher(name: str, path: str, topic: str, who: int, n: int, pause_s: float, ready) -> None:
    """``n`` numbered messages to ``topic``, ``pause_s`` apart (0: as fast as it can)."""
    mem = _open(name, path, f"paced-{who}")
    try:
        ready.wait(30)
        for i in range(n):
            mem.publish(topic, {"who": who, "i": i})
            if pause_s:
                time.sleep(pause_s)
    finally:
        mem.close()


def partial_reader(name: str, path: str, topic: str, take: int, conn) -> None:
    """Subscribe, say so, take ``take`` messages once told to, say so, then wait to be killed."""
    mem = _open(name, path, "partial-reader")
    sub = mem.subscribe(topic)
    conn.send("subscribed")
    conn.recv()
    got = [sub.recv(timeout=10) for _ in range(take)]
    conn.send(sum(m is not None for m in got))
    time.sleep(600)
