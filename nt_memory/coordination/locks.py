"""Named locks shared by every attached process, with fencing numbers and leases.

``acquire_lock(name, timeout, lease)`` returns a :class:`LockToken` whose ``fence`` only grows from
one holder to the next, so a resource guarded by the lock can refuse a stale holder's writes.
``release_lock(token)`` with a stale token (lease run out, or taken over) raises ``StaleToken``.
A lock whose holder died is taken over as soon as a waiter sees the death (pid gone, or its start
time changed: the member table), within about 100 ms; a lease that runs out frees it too. Waiters
sleep on a futex; newcomers queue behind sleeping waiters instead of barging past them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

import numpy as np
import xxhash

from nt_memory.errors import CapacityError, ConfigError, LockTimeout, StaleToken
from nt_memory.kernels import status as S
from nt_memory.kernels._jit import INT, entry_point
from nt_memory.kernels.locktable import (
    LK_FENCE_IDX,
    LK_HASH_IDX,
    LK_LEASE_IDX,
    LK_LOCK_IDX,
    LK_NAME_BYTES,
    LK_NAME_IDX,
    LK_NAME_LEN_IDX,
    LK_NOTIFY_IDX,
    LOCK_SLOT_WORDS,
    lock_release,
    lock_take_over,
    lock_try_acquire,
    lock_wait_count,
)
from nt_memory.kernels.lockword import lockword_acquire, lockword_release, lockword_steal
from nt_memory.kernels.words import word_load
from nt_memory.shm import coord_layout as C
from nt_memory.shm.system import System
from nt_memory.shm.wait import futex_wait, futex_wake

LIVENESS_CHECK_S = 0.1
SPIN_S = 20e-6  # how long a waiter polls before it sleeps


@dataclasses.dataclass(frozen=True)
class LockToken:
    """Proof of holding ``name``: ``fence`` grows with every new holder; ``owner`` is the holder's
    owner word (member slot + epoch)."""

    name: str
    fence: int
    owner: int
    slot: int


def validate_lock_name(name) -> bytes:
    if not isinstance(name, str) or not name or len(name.encode()) > LK_NAME_BYTES or "\0" in name:
        raise ConfigError(f"lock name {name!r} must be a non-empty str of at most {LK_NAME_BYTES} UTF-8 bytes")
    return name.encode()


def _seconds_to_ns(value, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or value != value:
        raise ConfigError(f"{what}={value!r} must be a positive number of seconds or None")
    return int(value * 1e9)


class Locks:
    """The named locks of a system, as seen from this process. Thread-safe."""

    def __init__(self, system: System):
        seg = system.parts["locks"]
        self.layout = C.LocksLayout.for_count(seg.params[0])
        self.system = system
        self.ctl = seg.region(self.layout.ctl_offset, C.CTL_WORDS * 8, np.int64)
        self.slots = seg.region(self.layout.slots_offset, self.layout.max_locks * LOCK_SLOT_WORDS * 8, np.int64)
        self.slots_addr = int(self.slots.ctypes.data)
        self._slot_of: dict[str, int] = {}
        self._try = entry_point(lock_try_acquire, INT, INT, INT, INT)
        self._release = entry_point(lock_release, INT, INT, INT)

    def _addr(self, slot: int, idx: int = 0) -> int:
        return self.slots_addr + (slot * LOCK_SLOT_WORDS + idx) * 8

    def _slot(self, name: str) -> int:
        slot = self._slot_of.get(name)
        if slot is not None:
            return slot
        raw = validate_lock_name(name)
        h = xxhash.xxh3_64_intdigest(raw) & 0x7FFF_FFFF_FFFF_FFFF or 1
        n = self.layout.max_locks
        owner = self.system.owner
        while not lockword_acquire(self.ctl, C.CTL_LOCK_IDX, owner):
            holder = int(self.ctl[C.CTL_LOCK_IDX])
            if holder and not self.system.owner_alive(holder):
                lockword_steal(self.ctl, C.CTL_LOCK_IDX, holder, 0)
        try:
            for probe in range(n):
                i = (h + probe) % n
                base = i * LOCK_SLOT_WORDS
                sh = int(self.slots[base + LK_HASH_IDX])
                if sh == h and self._name(i) == raw:
                    break
                if sh == 0:
                    self.slots[base + LK_NAME_LEN_IDX] = len(raw)
                    self.slots[base + LK_NAME_IDX : base + LK_NAME_IDX + 8] = np.frombuffer(
                        raw.ljust(LK_NAME_BYTES, b"\0"), np.int64
                    )
                    self.slots[base + LK_HASH_IDX] = h
                    break
            else:
                raise CapacityError(f"all {n} lock slots of system {self.system.name!r} are in use")
        finally:
            lockword_release(self.ctl, C.CTL_LOCK_IDX)
        self._slot_of[name] = i
        return i

    def _name(self, slot: int) -> bytes:
        base = slot * LOCK_SLOT_WORDS
        n = int(self.slots[base + LK_NAME_LEN_IDX])
        return self.slots[base + LK_NAME_IDX : base + LK_NAME_IDX + 8].tobytes()[:n]

    # ---------------------------------------------------------------------------------- verbs
    def acquire(self, name: str, timeout: float | None = None, lease: float | None = None) -> LockToken:
        """Take ``name``; waits up to ``timeout`` seconds (None: forever) and raises
        ``LockTimeout``. With ``lease`` (seconds) the lock frees itself when the lease runs out."""
        lease_ns = _seconds_to_ns(lease, "lease")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0
        ):
            raise ConfigError(f"timeout={timeout!r} must be a number of seconds >= 0, or None")
        slot = self._slot(name)
        owner = self.system.owner
        addr = self._addr(slot)
        fence = self._try(addr, owner, lease_ns, 0)
        if fence > 0:
            return LockToken(name, fence, owner, slot)
        # Spin briefly before queueing to sleep: most critical sections are shorter than a wake-up.
        spin_end = time.perf_counter() + SPIN_S
        while time.perf_counter() < spin_end:
            fence = self._try(addr, owner, lease_ns, 0)
            if fence > 0:
                return LockToken(name, fence, owner, slot)
        deadline = None if timeout is None else time.monotonic() + timeout
        base = slot * LOCK_SLOT_WORDS
        notify = self._addr(slot, LK_NOTIFY_IDX)
        lock_wait_count(addr, 1)
        try:
            while True:
                seen = word_load(notify)
                fence = self._try(addr, owner, lease_ns, 1)
                if fence > 0:
                    return LockToken(name, fence, owner, slot)
                holder = int(self.slots[base + LK_LOCK_IDX])
                lease_end = int(self.slots[base + LK_LEASE_IDX])
                if holder and ((lease_end and time.time_ns() >= lease_end) or not self.system.owner_alive(holder)):
                    fence = lock_take_over(addr, holder, owner, lease_ns)
                    if fence > 0:
                        return LockToken(name, fence, owner, slot)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise LockTimeout(
                        f"lock {name!r} is held (fence {int(self.slots[base + LK_FENCE_IDX])}); waited {timeout}s"
                    )
                wait = LIVENESS_CHECK_S if left is None else min(left, LIVENESS_CHECK_S)
                if lease_end:
                    wait = min(wait, max(0.0, (lease_end - time.time_ns()) / 1e9))
                futex_wait(notify, seen, wait)
        finally:
            lock_wait_count(addr, -1)

    def release(self, token: LockToken) -> None:
        """Release; ``StaleToken`` if the token no longer holds the lock."""
        if not isinstance(token, LockToken):
            raise ConfigError(f"release_lock takes a LockToken, got {type(token).__name__}")
        r = self._release(self._addr(token.slot), token.owner, token.fence)
        if r == S.STALE:
            raise StaleToken(
                f"token for lock {token.name!r} (fence {token.fence}) is stale: its lease ran out or it was taken over"
            )
        if r > 0:
            futex_wake(self._addr(token.slot, LK_NOTIFY_IDX))

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float | None = None, lease: float | None = None):
        token = self.acquire(name, timeout, lease)
        try:
            yield token
        finally:
            self.release(token)

    def holders(self) -> list[dict]:
        """Every named lock with its holder's owner word (0 = free) and last fence."""
        out = []
        for i in range(self.layout.max_locks):
            base = i * LOCK_SLOT_WORDS
            if int(self.slots[base + LK_HASH_IDX]):
                out.append(
                    {
                        "name": self._name(i).decode(),
                        "holder": int(self.slots[base + LK_LOCK_IDX]),
                        "fence": int(self.slots[base + LK_FENCE_IDX]),
                        "lease_ns": int(self.slots[base + LK_LEASE_IDX]),
                    }
                )
        return out
