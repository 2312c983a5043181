"""Locks barge (a free lock goes to whoever tries first) but never starve a waiter: one that has
waited past the starvation bound claims the next turn, and a claim left by a dead, stopped or
forged owner never blocks the lock."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal

import pytest

from nt_memory.kernels import status as S
from nt_memory.kernels.layout.locktable import LK_HANDOFF_IDX, WAKE_NONE
from nt_memory.kernels.words import word_load, word_store
from tests.multiprocess import coord_workers as W

pytestmark = pytest.mark.multiprocess
CTX = mp.get_context("spawn")


def _handoff_addr(mem, lock_name: str) -> int:
    slot, _ = mem.locks._slot(lock_name)
    return mem.locks._addr(slot, LK_HANDOFF_IDX)


def test_a_sleeping_waiter_gets_the_lock_between_two_hammering_processes(mem):
    """Two processes re-take the lock the instant it is free; without the starvation bound the
    sleeper here (woken after each release, tens of microseconds late) finds it taken every time."""
    mem.release_lock(mem.acquire_lock("hot"))
    ready, stop, out = CTX.Queue(), CTX.Event(), CTX.Queue()
    procs = [
        CTX.Process(target=W.lock_hammer, args=(mem.name, mem.config.path, 200e-6, ready, stop, out)) for _ in (0, 1)
    ]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get(timeout=60)
        fences = []
        for _ in range(20):
            token = mem.acquire_lock("hot", timeout=10)  # LockTimeout here is the starvation
            fences.append(token.fence)
            mem.release_lock(token)
        assert fences == sorted(fences) and len(set(fences)) == 20
    finally:
        stop.set()
        counts = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(30)
    assert all(n > 0 for n in counts)
    assert word_load(_handoff_addr(mem, "hot")) == 0  # every claim was served or withdrawn


@pytest.mark.parametrize("how", ["killed", "stopped", "forged"])
def test_a_claim_by_a_dead_stopped_or_forged_owner_does_not_block_the_lock(mem, how):
    mem.release_lock(mem.acquire_lock("hot"))
    addr = _handoff_addr(mem, "hot")
    p = None
    if how == "forged":
        owner = 0x5EED_0000_0000_0001
    else:
        here, there = CTX.Pipe()
        p = CTX.Process(target=W.owner_word_and_wait, args=(mem.name, mem.config.path, there))
        p.start()
        assert here.poll(60)
        owner = here.recv()
        os.kill(p.pid, signal.SIGKILL if how == "killed" else signal.SIGSTOP)
        if how == "killed":
            p.join(10)
    try:
        word_store(addr, owner)  # as if that process had waited past the bound, then died/stopped
        token = mem.acquire_lock("hot", timeout=5)  # the newcomer path finds the claim, waits, drops it
        mem.release_lock(token)
        assert word_load(addr) == 0
        token = mem.acquire_lock("hot", timeout=5)
        mem.release_lock(token)
    finally:
        if p is not None and p.is_alive():
            os.kill(p.pid, signal.SIGCONT)
            p.kill()
            p.join(10)


def test_while_a_starved_waiter_holds_the_claim_only_it_is_granted_the_lock(mem):
    """The kernel's rule, deterministically: with HANDOFF set, a free lock refuses every other
    owner (newcomer or waiter) and goes to the claimer, whose grant clears the claim."""
    locks = mem.locks
    slot, h = locks._slot("hot")
    addr = locks._addr(slot)
    claimer, other = 0x0000_0001_0000_0011, 0x0000_0001_0000_0022  # two owner words, not ours
    assert locks._handoff(addr, 0, claimer) == 0
    assert locks._handoff(addr, 0, other) == claimer  # one claim at a time
    assert locks._try(addr, locks.ctl_addr, h, other, 0) == S.BUSY  # free, but not for it
    assert locks._try(addr, locks.ctl_addr, h, mem.system.owner, 0) == S.BUSY
    fence = locks._try(addr, locks.ctl_addr, h, claimer, 0)
    assert fence > 0 and word_load(_handoff_addr(mem, "hot")) == 0
    assert locks._release(addr, h, claimer, fence) == WAKE_NONE
    token = mem.acquire_lock("hot", timeout=1)  # barging resumes
    mem.release_lock(token)
