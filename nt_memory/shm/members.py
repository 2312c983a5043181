"""The member table: who is attached to a system, and whether they are still alive.

Each attached handle holds one slot. A slot's STATE word is a generation counter, odd while the
slot is held; it is claimed and released by CAS, so two processes never share a slot. The *owner
word* that goes into lock words is ``STATE << 16 | slot + 1``: once the slot is released or reused
the STATE no longer matches, so a lock held under a dead registration is recognisably orphaned.

A member is dead when its slot's STATE moved on, when ``kill(pid, 0)`` says the pid is gone, or when
``/proc/<pid>/stat`` shows another start time (the pid was reused).

Member slot (128 bytes, int64 words)::

    0 STATE  1 PID  2 START_TIME (clock ticks since boot)  3 HEARTBEAT_NS  4 ATTACHED_NS
    5 L1_HITS  6 L1_MISSES  7 (spare)  8-15 LABEL (64 bytes of UTF-8, NUL-padded)
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from nt_memory.errors import CapacityError
from nt_memory.kernels import lazy
from nt_memory.shm import layout as L
from nt_memory.shm.segment import acquire_load

KW = lazy("words", globals())

MEMBER_WORDS = 16
MEMBER_BYTES = MEMBER_WORDS * 8
M_STATE_IDX = 0
M_PID_IDX = 1
M_START_IDX = 2
M_HEARTBEAT_IDX = 3
M_ATTACHED_IDX = 4
M_STATS_IDX = 5  # the kernels' MEMBER_HITS/MISSES words start here
M_LABEL_IDX = 8
LABEL_BYTES = 64
HEARTBEAT_EVERY_NS = 1_000_000_000


def process_start_time(pid: int) -> int:
    """Start time of ``pid`` in clock ticks since boot (field 22 of /proc/<pid>/stat), 0 if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(b")") + 2 :].split()
    return int(fields[19]) if len(fields) > 19 else 0


def pid_alive(pid: int, start_time: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    if start_time:
        now_start = process_start_time(pid)
        if now_start and now_start != start_time:
            return False
        if not now_start and os.path.isdir("/proc") and not os.path.exists(f"/proc/{pid}"):
            return False
    return True


def owner_slot(owner: int) -> int:
    return (owner & 0xFFFF) - 1


def owner_state(owner: int) -> int:
    return owner >> 16


@dataclasses.dataclass(frozen=True)
class MemberInfo:
    slot: int
    pid: int
    label: str
    attached_ns: int
    heartbeat_ns: int
    alive: bool
    l1_hits: int
    l1_misses: int


class MemberTable:
    """The member slots in a root segment (``words``: the region as int64, ``address``: its base)."""

    def __init__(self, words: np.ndarray, address: int, capacity: int):
        self.words = words
        self.address = address
        self.capacity = capacity

    def _addr(self, slot: int, idx: int) -> int:
        return self.address + (slot * MEMBER_WORDS + idx) * 8

    def register(self, label: str = "") -> tuple[int, int]:
        """Claim a slot for this process; returns ``(slot, owner word)``. Reclaims slots of dead
        members when none is free; raises :class:`CapacityError` when every slot is alive."""
        pid = os.getpid()
        start = process_start_time(pid)
        for attempt in range(2):
            for slot in range(self.capacity):
                st_addr = self._addr(slot, M_STATE_IDX)
                state = KW.word_load(st_addr)
                if state & 1:
                    if attempt == 0 or self._slot_alive(slot, state):
                        continue
                    # Dead holder: release its registration first (a lock word naming it stays
                    # recognisably orphaned because the state moves on).
                    if KW.word_cas(st_addr, state, state + 1) != state:
                        continue
                    state += 1
                if KW.word_cas(st_addr, state, state + 1) != state:
                    continue
                row = np.zeros(MEMBER_WORDS, np.int64)  # composed here; the state word stays as claimed
                now = time.time_ns()
                row[M_PID_IDX] = pid
                row[M_START_IDX] = start
                row[M_HEARTBEAT_IDX] = now
                row[M_ATTACHED_IDX] = now
                raw = label.encode("utf-8", "replace")[:LABEL_BYTES]
                row[M_LABEL_IDX:] = L.text_words(raw, MEMBER_WORDS - M_LABEL_IDX)
                KW.store_words(self.words, slot * MEMBER_WORDS + M_PID_IDX, row[M_PID_IDX:])
                return slot, ((state + 1) << 16) | (slot + 1)
        raise CapacityError(
            f"all {self.capacity} member slots are held by live processes; raise max_members or close unused handles"
        )

    def unregister(self, owner: int) -> None:
        slot = owner_slot(owner)
        state = owner_state(owner)
        if 0 <= slot < self.capacity:
            KW.word_cas(self._addr(slot, M_STATE_IDX), state, state + 1)

    def heartbeat(self, slot: int, now_ns: int) -> None:
        KW.word_store(self._addr(slot, M_HEARTBEAT_IDX), now_ns)

    def _slot_alive(self, slot: int, state: int) -> bool:
        base = slot * MEMBER_WORDS
        if not state & 1:
            return False
        pid = int(self.words[base + M_PID_IDX])
        if pid == os.getpid():
            return True
        return pid_alive(pid, int(self.words[base + M_START_IDX]))

    def owner_alive(self, owner: int) -> bool:
        """Is the process behind an owner word (from a lock word) still attached and alive?"""
        slot = owner_slot(owner)
        if not 0 <= slot < self.capacity:
            return False
        state = acquire_load(self.words, slot * MEMBER_WORDS + M_STATE_IDX)
        if state != owner_state(owner):
            return False
        return self._slot_alive(slot, state)

    def owner_pid(self, owner: int) -> int:
        """The pid registered behind an owner word (0 if its slot is out of range or moved on)."""
        slot = owner_slot(owner)
        if not 0 <= slot < self.capacity:
            return 0
        if acquire_load(self.words, slot * MEMBER_WORDS + M_STATE_IDX) != owner_state(owner):
            return 0
        return int(self.words[slot * MEMBER_WORDS + M_PID_IDX])

    def members(self) -> list[MemberInfo]:
        out = []
        for slot in range(self.capacity):
            base = slot * MEMBER_WORDS
            state = int(self.words[base + M_STATE_IDX])
            if not state & 1:
                continue
            label = self.words[base + M_LABEL_IDX : base + MEMBER_WORDS].tobytes().rstrip(b"\0")
            out.append(
                MemberInfo(
                    slot=slot,
                    pid=int(self.words[base + M_PID_IDX]),
                    label=label.decode("utf-8", "replace"),
                    attached_ns=int(self.words[base + M_ATTACHED_IDX]),
                    heartbeat_ns=int(self.words[base + M_HEARTBEAT_IDX]),
                    alive=self._slot_alive(slot, state),
                    l1_hits=int(self.words[base + M_STATS_IDX]),
                    l1_misses=int(self.words[base + M_STATS_IDX + 1]),
                )
            )
        return out

    def stats_address(self, slot: int) -> int:
        return self._addr(slot, M_STATS_IDX)

    def heartbeat_address(self, slot: int) -> int:
        return self._addr(slot, M_HEARTBEAT_IDX)
