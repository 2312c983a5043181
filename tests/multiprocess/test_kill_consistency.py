"""SIGKILL a writer mid-write, again and again: L1, the journal and LMDB must agree afterwards, so
no value changes later without a write (not when L1 evicts it, not across a reboot), and every
key holds exactly its last acknowledged write. The writer announces each operation first, so the
one it may have been killed in is known: that key may hold either outcome. The test stops the
writer at random moments until it is caught inside a write (holding a stripe) and kills it there;
`repairs` counts the locks recovery found held by the dead writer. A batch (``put_many``) is
announced whole: a kill inside it may leave each of its keys with either outcome."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time

import pytest

from nt_memory import MemorySystem
from nt_memory.shm.system import remove_system
from nt_memory.tiers.codec import decode
from tests.multiprocess import mem_workers as W

pytestmark = pytest.mark.multiprocess
CTX = mp.get_context("spawn")


def _receive(parent, acked, pending):
    while parent.poll():
        kind, writes = parent.recv()
        if kind == "will":
            pending[:] = writes
        elif kind == "ack":
            acked.update(writes)
            pending.clear()


def _kill_round(name, path, seed, acked, pending):
    parent, child = CTX.Pipe()
    p = CTX.Process(target=W.kill_consistency_writer, args=(name, path, child, seed, seed * 10_000_000))
    p.start()
    try:
        assert parent.poll(60), "the writer did not start"
        parent.recv()
        # Keep reading the acknowledgements: a writer blocked on a full pipe is killed in send(),
        # never inside a write.
        rnd = random.Random(seed)
        deadline = time.monotonic() + rnd.uniform(0.05, 0.4)
        while time.monotonic() < deadline:
            _receive(parent, acked, pending)
        inside = _stop_inside_a_write(name, p.pid, rnd)
        os.kill(p.pid, signal.SIGKILL)
        os.kill(p.pid, signal.SIGCONT)
        p.join(10)
        _receive(parent, acked, pending)
    finally:
        if p.is_alive():
            p.kill()
            p.join(5)
    assert p.exitcode == -signal.SIGKILL
    return inside


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(") ", 1)[1][0] == "T"


def _stop_inside_a_write(name: str, pid: int, rnd: random.Random) -> bool:
    """SIGSTOP the writer at random moments until it is caught holding an L1 stripe or the
    journal's append lock (a write half done), and leave it stopped there. Returns whether it was
    caught inside (else it is stopped wherever the last try found it)."""
    from nt_memory.shm.system import System
    from nt_memory.tiers.l1 import HotCache

    observer = HotCache(System.attach(name, register=False))
    try:
        for _ in range(300):
            os.kill(pid, signal.SIGSTOP)
            deadline = time.monotonic() + 5
            while not _stopped(pid) and time.monotonic() < deadline:
                time.sleep(0.0002)
            if any(observer.system.members.owner_pid(o) == pid for o in observer.lock_owners()):
                return True
            os.kill(pid, signal.SIGCONT)
            time.sleep(rnd.uniform(0, 0.003))
        os.kill(pid, signal.SIGSTOP)
        return False
    finally:
        observer.close()


def _served(mem):
    """Every key's value as get serves it, checked whole, and as LMDB holds it after a flush."""
    served = {}
    for k in range(W.KC_KEYS):
        v = mem.get("kc", f"k{k}")
        if v is not None:
            assert W.kc_parse(v) is not None and W.kc_parse(v)[0] == k, f"k{k}: a torn or foreign value"
        served[k] = v
    mem.flush()
    for k in range(W.KC_KEYS):
        hit = mem.store.kv_get(f"kc\0k{k}".encode())
        in_l3 = decode(hit[0]) if hit else None
        assert in_l3 == served[k], f"k{k}: L1/journal serve {W.kc_parse(served[k])}, LMDB holds {W.kc_parse(in_l3)}"
    return served


def _check_acked(served, acked, pending):
    """Each key serves its last acknowledged operation's outcome (a number, or None after a
    delete); the key of an announced but unacknowledged operation may serve that one's."""
    maybe = dict(pending)
    for k in range(W.KC_KEYS):
        got = W.kc_parse(served[k])[1] if served[k] is not None else None
        allowed = set()
        for n in (acked.get(k), maybe.get(k)):
            if n is not None:
                allowed.add(n if n > 0 else None)
        if k not in acked:
            allowed.add(None)
        assert got in allowed, f"k{k}: serving {got}, but the acknowledged state allows only {allowed}"


def _run(name, path, rounds):
    acked: dict[int, int] = {}
    served = {}
    inside = 0
    try:
        for r in range(rounds):
            pending: list = []
            inside += _kill_round(name, path, r + 1, acked, pending)
            with MemorySystem.open(W.kc_config(name, path)) as mem:
                served = _served(mem)
                _check_acked(served, acked, pending)
                # What the kill left is now the acknowledged state, for the next round's check.
                for k in range(W.KC_KEYS):
                    if served[k] is not None:
                        acked[k] = W.kc_parse(served[k])[1]
                    elif k in acked:
                        acked[k] = -1
                # Later, with no write: still the same everywhere (the L1 copies expire or are
                # evicted in between here by dropping them).
                for k in range(W.KC_KEYS):
                    mem.l1.delete("kc", f"k{k}")
                assert {k: mem.get("kc", f"k{k}") for k in range(W.KC_KEYS)} == served
                repairs = mem.stats()["l1"]["repairs"]
        with MemorySystem.open(W.kc_config(name, path)) as mem:
            mem.unlink()  # a reboot: shared memory gone, LMDB stays
        with MemorySystem.open(W.kc_config(name, path)) as mem:
            after = {k: mem.get("kc", f"k{k}") for k in range(W.KC_KEYS)}
            assert after == served, "a value changed across the reboot with no write"
            mem.unlink()
    finally:
        remove_system(name)
    return repairs, inside


def test_sigkilled_writers_leave_every_tier_agreeing(name, tmp_path):
    repairs, inside = _run(name, str(tmp_path), rounds=12)
    assert inside > 0 and repairs > 0, "no kill landed inside a write: the test did not test recovery"


@pytest.mark.slow
def test_sigkilled_writers_leave_every_tier_agreeing_soak(name, tmp_path):
    repairs, inside = _run(name, str(tmp_path), rounds=60)
    assert inside > 0 and repairs > 0
