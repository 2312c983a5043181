"""The ring, the arena and the lock table against naive models (tests/naive.py), under
hypothesis state machines, beside the table's (tests/tiers/test_l1_model.py). Each machine drives
the kernels on private memory exactly as the tiers call them."""

from __future__ import annotations

import hypothesis.strategies as st
import numpy as np
from hypothesis import settings
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, multiple, precondition, rule

from nt_memory.kernels import status as S
from nt_memory.kernels.arena import (
    arena_alloc,
    arena_block,
    arena_class_for,
    arena_free,
    arena_init,
    ref_offset,
)
from nt_memory.kernels.layout.arena import (
    ARENA_BUMP_IDX,
    ARENA_HDR_WORDS,
    ARENA_USED_BYTES_IDX,
    BLOCK_HDR_BYTES,
    class_sizes,
)
from nt_memory.kernels.layout.locktable import CTL_FENCE_LIMIT_IDX, LK_HASH_IDX, LOCK_SLOT_WORDS, WAKE_NONE
from nt_memory.kernels.layout.ring import RING_HDR_WORDS
from nt_memory.kernels.locktable import lock_release, lock_take_over, lock_try_acquire
from nt_memory.kernels.ring import record_bytes, ring_init, ring_publish, ring_receive, ring_snapshot
from tests.naive import NaiveArena, NaiveLock, NaiveRing

SETTINGS = settings(max_examples=60, stateful_step_count=60, deadline=None)


# -------------------------------------------------------------------------------------- ring
class RingMachine(RuleBasedStateMachine):
    """Publishers and lagging receivers: every message received is the one published under that
    number, in order, and received + dropped == published for every receiver."""

    CAPACITY = 1024  # small: a few messages lap it
    OWNER = 7

    def __init__(self):
        super().__init__()
        self.hdr = np.zeros(RING_HDR_WORDS, np.int64)
        ring_init(self.hdr, self.CAPACITY)
        self.data = np.zeros(self.CAPACITY // 8, np.int64)
        self.addrs = (int(self.hdr.ctypes.data), int(self.data.ctypes.data))
        self.model = NaiveRing(self.CAPACITY, record_bytes)
        self.out = np.zeros(self.CAPACITY, np.uint8)
        self.receivers: list[dict] = []

    @rule(msg=st.binary(max_size=200))
    def publish(self, msg):
        r = ring_publish(*self.addrs, self.CAPACITY, self.OWNER, msg)
        assert r >= 0 and r & 1 == 0, r  # nobody sleeps here
        assert r >> 1 == self.model.publish(msg)

    @rule(n=st.integers(1, 20), size=st.integers(0, 200))
    def publish_burst(self, n, size):
        """Enough at once to lap a receiver that is not keeping up."""
        for i in range(n):
            self.publish(bytes([i]) * size)

    @rule()
    def subscribe(self):
        cursor, first = ring_snapshot(self.addrs[0], self.OWNER)
        assert (cursor, first) == (self.model.tail, len(self.model.records))
        self.receivers.append({"cursor": cursor, "first": first, "expected": first, "received": 0, "dropped": 0})

    @precondition(lambda self: self.receivers)
    @rule(i=st.integers(0, 1000), n=st.integers(1, 8))
    def receive(self, i, n):
        rx = self.receivers[i % len(self.receivers)]
        for _ in range(n):
            length, cursor, msg_no = ring_receive(*self.addrs, self.CAPACITY, rx["cursor"], self.out)
            want = self.model.receive(rx["cursor"])
            if want is None:
                assert length == S.NOT_FOUND
                return
            no, end, msg = want
            assert (msg_no, cursor, self.out[:length].tobytes()) == (no, end, msg)
            assert msg_no >= rx["expected"]
            rx["dropped"] += msg_no - rx["expected"]
            rx["expected"] = msg_no + 1
            rx["received"] += 1
            rx["cursor"] = cursor

    @invariant()
    def every_message_is_received_or_counted_dropped(self):
        for rx in self.receivers:
            assert rx["received"] + rx["dropped"] == rx["expected"] - rx["first"]


# ------------------------------------------------------------------------------------- arena
class ArenaMachine(RuleBasedStateMachine):
    """Blocks never overlap, hold what was written until freed, FULL only when nothing that fits
    is free, and stale references are ignored."""

    DATA_BYTES = 1 << 13  # small: allocations run out
    MAX_BLOCK = 1024
    refs = Bundle("refs")

    def __init__(self):
        super().__init__()
        self.hdr = np.zeros(ARENA_HDR_WORDS, np.int64)
        self.data = np.zeros(self.DATA_BYTES // 8, np.int64)
        self.bytes = self.data.view(np.uint8)
        self.sizes = class_sizes(self.MAX_BLOCK)
        arena_init(self.hdr, self.DATA_BYTES, self.MAX_BLOCK)
        self.model = NaiveArena()
        self.freed: dict[int, int] = {}  # class -> blocks on its free list (model)
        self.stale: list[int] = []

    @rule(target=refs, n=st.integers(0, MAX_BLOCK - BLOCK_HDR_BYTES), fill=st.integers(0, 255))
    def alloc(self, n, fill):
        ref = arena_alloc(self.hdr, self.data, n, self.DATA_BYTES, self.sizes)
        c = arena_class_for(self.sizes, n + BLOCK_HDR_BYTES)
        if ref == S.FULL:
            reachable = range(c, min(c + 4, len(self.sizes) - 1) + 1)
            assert not any(self.freed.get(cc, 0) for cc in reachable)
            return multiple()  # nothing to add to the bundle
        assert ref > 0, ref
        off = ref_offset(ref)
        size = int(self.sizes[int(self.data[off >> 3] >> 32) & 0xFFFF])
        assert size >= n + BLOCK_HDR_BYTES and not self.model.overlaps(off, size)
        assert off + size <= self.DATA_BYTES
        cls = int(self.data[off >> 3] >> 32) & 0xFFFF
        if off + size <= int(self.hdr[ARENA_BUMP_IDX]) and self.freed.get(cls, 0):
            self.freed[cls] -= 1  # it came off a free list (a fresh block is past the old bump)
        payload = bytes([fill]) * n
        self.data[(off >> 3) + 1] = n << 32  # the value length, as the table writes it
        self.bytes[off + BLOCK_HDR_BYTES : off + BLOCK_HDR_BYTES + n] = np.frombuffer(payload, np.uint8)
        self.model.live[ref] = (off, size, payload)
        return ref

    @rule(ref=consumes(refs))
    def free(self, ref):
        if ref not in self.model.live:
            return
        off, size, _ = self.model.live.pop(ref)
        assert arena_free(self.hdr, self.data, ref, self.DATA_BYTES, self.sizes) == S.OK
        cls = int(self.data[off >> 3] >> 32) & 0xFFFF
        self.freed[cls] = self.freed.get(cls, 0) + 1
        self.stale.append(ref)

    @precondition(lambda self: self.stale)
    @rule(i=st.integers(0, 1000))
    def free_a_stale_reference_again(self, i):
        used = int(self.hdr[ARENA_USED_BYTES_IDX])
        ref = self.stale[i % len(self.stale)]
        assert arena_free(self.hdr, self.data, ref, self.DATA_BYTES, self.sizes) == S.OK
        assert int(self.hdr[ARENA_USED_BYTES_IDX]) == used
        assert arena_block(self.data, self.DATA_BYTES, ref)[0] == -1

    @invariant()
    def live_blocks_hold_what_was_written(self):
        assert int(self.hdr[ARENA_USED_BYTES_IDX]) == self.model.used_bytes()
        for ref, (off, _, payload) in self.model.live.items():
            start, vlen, klen = arena_block(self.data, self.DATA_BYTES, ref)
            assert (start, vlen, klen) == (off + BLOCK_HDR_BYTES, len(payload), 0)
            assert self.bytes[start : start + vlen].tobytes() == payload


# ---------------------------------------------------------------------------------- lock table
class LockTableMachine(RuleBasedStateMachine):
    """One lock slot, several owners: one holder at a time, fences only grow and never pass the
    limit, a token releases only its own holding, an expired lease makes its release STALE, and a
    take-over issues a new fence that the old token cannot release."""

    OWNERS = (11, 12, 13)
    HASH = 0x5EED

    def __init__(self):
        super().__init__()
        self.slot = np.zeros(LOCK_SLOT_WORDS, np.int64)
        self.slot[LK_HASH_IDX] = self.HASH
        self.ctl = np.zeros(8, np.int64)
        self.ctl[CTL_FENCE_LIMIT_IDX] = 5
        self.addrs = (int(self.slot.ctypes.data), int(self.ctl.ctypes.data))
        self.model = NaiveLock(limit=5)
        self.tokens: list[tuple[int, int]] = []

    def _code(self, r: int) -> str | int:
        return r if r > 0 else S.NAMES[r]

    @rule(owner=st.sampled_from(OWNERS), expired=st.booleans())
    def try_acquire(self, owner, expired):
        r = lock_try_acquire(*self.addrs, self.HASH, owner, 1 if expired else 0)
        assert self._code(r) == self.model.try_acquire(owner, expired)
        if r > 0:
            self.tokens.append((owner, r))

    @rule(owner=st.sampled_from(OWNERS))
    def take_over(self, owner):
        r = lock_take_over(*self.addrs, self.HASH, self.model.holder, owner, 0) if self.model.holder else S.BUSY
        assert self._code(r) == self.model.take_over(owner)
        if r > 0:
            self.tokens.append((owner, r))

    @precondition(lambda self: self.tokens)
    @rule(i=st.integers(0, 1000))
    def release(self, i):
        owner, fence = self.tokens[i % len(self.tokens)]
        r = lock_release(self.addrs[0], self.HASH, owner, fence)
        assert ("OK" if r >= WAKE_NONE else S.NAMES[r]) == self.model.release(owner, fence)

    @rule(more=st.integers(1, 3))
    def reserve_more_fences(self, more):
        self.ctl[CTL_FENCE_LIMIT_IDX] += more
        self.model.limit += more

    @rule()
    def a_renamed_slot_is_not_found(self):
        self.slot[LK_HASH_IDX] = self.HASH + 1
        assert lock_try_acquire(*self.addrs, self.HASH, self.OWNERS[0], 0) == S.NOT_FOUND
        assert lock_release(self.addrs[0], self.HASH, self.model.holder, self.model.fence) == S.STALE
        self.slot[LK_HASH_IDX] = self.HASH

    @invariant()
    def one_holder_and_the_fence_only_grows(self):
        assert self.slot[1] == self.model.holder  # LK_LOCK_IDX
        assert self.slot[2] == self.model.fence <= self.model.limit  # LK_FENCE_IDX


TestRing = RingMachine.TestCase
TestArena = ArenaMachine.TestCase
TestLockTable = LockTableMachine.TestCase
TestRing.settings = TestArena.settings = TestLockTable.settings = SETTINGS
