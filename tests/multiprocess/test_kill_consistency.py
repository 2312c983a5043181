"""SIGKILL a writer mid-write, again and again: L1, the journal and LMDB must agree afterwards, so
no value changes later without a write (not when L1 evicts it, not across a reboot), and no
acknowledged put is lost. The writer's values are large, so many kills land inside a write
(`repairs` counts the stripes that recovery found held by the dead writer)."""

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


def _kill_round(name, path, seed, acked):
    parent, child = CTX.Pipe()
    p = CTX.Process(target=W.kill_consistency_writer, args=(name, path, child, seed, seed * 10_000_000))
    p.start()
    try:
        assert parent.poll(60), "the writer did not start"
        parent.recv()
        # Keep reading the acknowledgements: a writer blocked on a full pipe is killed in send(),
        # never inside a write.
        deadline = time.monotonic() + random.Random(seed).uniform(0.05, 0.4)
        while time.monotonic() < deadline:
            while parent.poll():
                _, k, n = parent.recv()
                acked[k] = n
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)
        while parent.poll():
            _, k, n = parent.recv()
            acked[k] = n
    finally:
        if p.is_alive():
            p.kill()
            p.join(5)
    assert p.exitcode == -signal.SIGKILL


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


def _check_acked(served, acked):
    for k, n in acked.items():
        got = W.kc_parse(served[k])[1] if served[k] is not None else None
        if n < 0:  # the last acknowledged operation was a delete: absent, or a later unacked put
            assert got is None or got > -n, f"k{k}: deleted at {-n}, serving {got}"
        else:
            assert got is not None and got >= n, f"k{k}: acknowledged write {n} lost (serving {got})"


def _run(name, path, rounds):
    acked: dict[int, int] = {}
    served = {}
    try:
        for r in range(rounds):
            _kill_round(name, path, r + 1, acked)
            with MemorySystem.open(W.kc_config(name, path)) as mem:
                served = _served(mem)
                _check_acked(served, acked)
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
    return repairs


def test_sigkilled_writers_leave_every_tier_agreeing(name, tmp_path):
    repairs = _run(name, str(tmp_path), rounds=12)
    assert repairs > 0, "no kill landed inside a write: the test did not test recovery"


@pytest.mark.slow
def test_sigkilled_writers_leave_every_tier_agreeing_soak(name, tmp_path):
    repairs = _run(name, str(tmp_path), rounds=60)
    assert repairs > 0
