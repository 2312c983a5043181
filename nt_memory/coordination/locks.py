"""Named locks shared by every attached process, with fencing numbers and leases.

``acquire_lock(name, timeout, lease)`` returns a :class:`LockToken` whose ``fence`` only grows from
one holder to the next, across reboots too (fences are issued below a high-water mark that L3
holds durably, reserved ahead in blocks of :data:`FENCE_BLOCK`), so a resource guarded by the lock
can refuse a stale holder's writes. ``release_lock(token)`` with a stale token (lease run out, or
taken over) raises ``StaleToken``. A lock whose holder died is taken over as soon as a waiter sees
the death (pid gone, or its start time changed: the member table), within about 100 ms; a lease
that runs out frees it too. Waiters spin for :data:`SPIN_S`, then sleep on a futex; a release wakes
one sleeper. A free lock goes to whoever tries first (barging: a lock passed between busy processes
does not pay a wake-up per handoff), but a waiter that has waited :data:`STARVATION_S` claims the
next turn (the slot's HANDOFF word) and gets it: no waiter starves.

A system holds :data:`MAX_LOCKS` lock names at once. When every slot is in use, a new name takes
over the slot of a name nobody holds or waits for; the fence numbering of every name keeps growing
all the same.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import xxhash

from nt_memory.durations import duration_ns, seconds
from nt_memory.errors import CapacityError, ConfigError, LockTimeout, StaleToken, TierError
from nt_memory.kernels import Compiled, lazy
from nt_memory.kernels import status as S
from nt_memory.kernels.layout.locktable import (
    CTL_FENCE_LIMIT_IDX,
    FIRST_HASH,
    HASH_FREE,
    HASH_RECLAIMED,
    LK_FENCE_IDX,
    LK_HANDOFF_IDX,
    LK_HASH_IDX,
    LK_LEASE_IDX,
    LK_LOCK_IDX,
    LK_NAME_BYTES,
    LK_NAME_IDX,
    LK_NAME_LEN_IDX,
    LK_NOTIFY_IDX,
    LK_WAITERS_IDX,
    LOCK_SLOT_WORDS,
    WAKE_ALL,
    WAKE_ONE,
)
from nt_memory.native import fast
from nt_memory.shm import coord_layout as C
from nt_memory.shm import layout as L
from nt_memory.shm.owned import OwnedLock, process_runnable
from nt_memory.shm.system import PartSpec, System
from nt_memory.shm.wait import WaitSteps, arun_sleeps, futex_wake, run_sleeps
from nt_memory.values import Duration

KL = lazy("locktable", globals())
KW = lazy("words", globals())
cabi = lazy("cabi", globals())

MAX_LOCKS = 1024
LIVENESS_CHECK_S = 0.1
SPIN_S = 20e-6  # how long a waiter polls before it sleeps
STARVATION_S = 1e-3  # a waiter that has waited this long is served next (Go's sync.Mutex uses 1 ms)
FENCE_KEY = b"locks/fence"  # the high-water mark of fences, in L3's meta database
FENCE_BLOCK = 1 << 20  # fences reserved at a time (one durable write per million acquisitions)
CTL_FENCE_FLOOR_IDX = 3  # the highest fence of a reclaimed slot: new slots start above it
CTL_FENCE_BASE_IDX = 4  # the high-water mark at creation: every slot starts above it


class LockToken(NamedTuple):
    """Proof of holding ``name``: ``fence`` grows with every new holder; ``owner`` is the holder's
    owner word (member slot + epoch). Immutable; a tuple, so the compiled fast path makes one in
    a few nanoseconds."""

    name: str
    fence: int
    owner: int
    slot: int
    key_hash: int = 0


def remote_scope(scoped: dict[str, Any], scope: object) -> Any:
    """The object serving ``scope`` (``"cluster"``) that a memory system put in a part's
    ``scoped`` map (Locks, Consensus), or a ConfigError saying what is missing."""
    remote = scoped.get(scope) if isinstance(scope, str) else None
    if remote is None:
        if scope == "cluster":
            raise ConfigError("scope='cluster' needs a system opened with MemoryConfig(cluster=ClusterConfig(...))")
        raise ConfigError(f"scope={scope!r} must be 'local' or 'cluster'")
    return remote


def validate_lock_name(name: object) -> bytes:
    if not isinstance(name, str) or not name or len(name.encode()) > LK_NAME_BYTES or "\0" in name:
        raise ConfigError(f"lock name {name!r} must be a non-empty str of at most {LK_NAME_BYTES} UTF-8 bytes")
    return name.encode()


def name_hash(raw: bytes) -> int:
    return max(FIRST_HASH, xxhash.xxh3_64_intdigest(raw) & 0x7FFF_FFFF_FFFF_FFFF)


def reserve_fences(store) -> tuple[int, int]:
    """(base, limit) for a lock table being created: fences resume above every fence issued
    before (the durable mark in L3), and a first block above it is reserved durably."""
    base = store.high_water(FENCE_KEY)
    return base, store.reserve(FENCE_KEY, base, FENCE_BLOCK)


def init_locks(seg, layout: C.LocksLayout, base: int, limit: int) -> None:
    """Lay out a fresh lock table whose fences start above ``base`` and may go up to ``limit``
    (both durable high-water marks from L3). Creator only, before the system is published."""
    ctl = seg.region(layout.ctl_offset, C.CTL_WORDS * 8, np.int64)
    KW.store_word(ctl, CTL_FENCE_BASE_IDX, base)
    KW.store_word(ctl, CTL_FENCE_FLOOR_IDX, base)
    KW.store_word(ctl, CTL_FENCE_LIMIT_IDX, limit)


class Locks:
    """The named locks of a system, as seen from this process. Thread-safe. ``store`` (L3) holds
    the fences' high-water mark; without it (an observer) locks cannot be taken."""

    PARTS: tuple[str, ...] = ("locks",)
    _try: Any = Compiled("locktable.lock_try_acquire", "INT", "INT", "INT", "INT", "INT")
    _handoff: Any = Compiled("locktable.lock_handoff", "INT", "INT", "INT")
    _release: Any = Compiled("locktable.lock_release", "INT", "INT", "INT", "INT")
    _extend: Any = Compiled("locktable.lock_extend", "INT", "INT", "INT", "INT", "INT")

    @classmethod
    def part_specs(cls, config, store) -> list[PartSpec]:
        """The Part protocol's specs (shm/parts.py): a table of MAX_LOCKS slots whose fences resume
        above every fence issued before (the high-water mark in ``store``, reserved ahead)."""
        base, limit = reserve_fences(store)
        ll = C.LocksLayout.for_count(MAX_LOCKS)
        init = lambda seg: init_locks(seg, ll, base, limit)  # noqa: E731
        return [PartSpec("locks", L.KIND_LOCKS, ll.total_bytes, ll.params, init)]

    @classmethod
    def attach(cls, system: System) -> Locks:
        """An observer's view (the Part protocol): holders, stats and verify; it cannot lock."""
        return cls(system)

    def __init__(self, system: System, store=None):
        seg = system.parts["locks"]
        max_locks = seg.params[0]
        self.layout = C.LocksLayout.for_count(max_locks)
        if not 1 <= max_locks <= 1 << 20 or self.layout.total_bytes != seg.size:
            raise TierError(f"system {system.name!r}: the lock table's shape is impossible")
        self.system = system
        self.store = store
        self.ctl = seg.region(self.layout.ctl_offset, C.CTL_WORDS * 8, np.int64)
        self.ctl_addr = int(self.ctl.ctypes.data)
        self.slots = seg.region(self.layout.slots_offset, self.layout.max_locks * LOCK_SLOT_WORDS * 8, np.int64)
        self.slots_addr = int(self.slots.ctypes.data)
        self._table_lock = OwnedLock(system, self.ctl, C.CTL_LOCK_IDX, "the lock table")
        self._slot_of: dict[str, tuple[int, int]] = {}
        # Locks of other scopes ("cluster": nt_memory/cluster/locks.py), set by the memory system
        # that offers them: acquire(scope=...) and their tokens go there.
        self.scoped: dict[str, Any] = {}
        if system.owner:
            # Loaded (or compiled) now, not on first use: a first extend must not spend its lease
            # compiling. An observer (inspect, top) takes no lock and loads none.
            _ = self._try, self._handoff, self._release, self._extend
        # Uncontended acquire and release in one C call each; everything else takes the Python
        # path (which is the whole algorithm: the C side only tries once and releases).
        self.fast_acquire = self.acquire
        self.fast_release = self.release
        if fast is not None and system.owner:  # an observer takes no lock: no C entries to load
            ops = fast.lockops(
                self.slots_addr,
                self.ctl_addr,
                system.owner,
                self.layout.max_locks,
                cabi.LOCK_TRY.address,
                cabi.LOCK_RELEASE.address,
                self._slot_of,
                LockToken,
                self.acquire,
                self.release,
            )
            self.fast_acquire = ops.acquire
            self.fast_release = ops.release

    def _addr(self, slot: int, idx: int = 0) -> int:
        return self.slots_addr + (slot * LOCK_SLOT_WORDS + idx) * 8

    def _slot(self, name: str) -> tuple[int, int]:
        """(slot, name hash) of ``name``, claiming a slot (or reclaiming an unused one) if new."""
        hit = self._slot_of.get(name)
        if hit is not None:
            return hit
        raw = validate_lock_name(name)
        h = name_hash(raw)
        with self._table_lock:
            slot = self._find_or_claim(raw, h)
        self._slot_of[name] = (slot, h)
        return slot, h

    def _find_or_claim(self, raw: bytes, h: int) -> int:
        n = self.layout.max_locks
        first_free = -1
        for probe in range(n):
            i = (h + probe) % n
            sh = int(self.slots[i * LOCK_SLOT_WORDS + LK_HASH_IDX])
            if sh == h and self._name(i) == raw:
                return i
            if sh in (HASH_FREE, HASH_RECLAIMED) and first_free < 0:
                first_free = i
            if sh == HASH_FREE:
                break
        if first_free < 0:
            first_free = self._reclaim_one(h)
        self._claim(first_free, raw, h)
        return first_free

    def _reclaim_one(self, h: int) -> int:
        """Every slot names a lock: free one that nobody holds or waits for (caller holds the
        table lock). Its fence raises the floor new slots start from."""
        n = self.layout.max_locks
        for probe in range(n):
            i = (h + probe) % n
            fence = KL.lock_try_reclaim(self._addr(i), self.system.owner)
            if fence >= 0:
                KW.store_word(self.ctl, CTL_FENCE_FLOOR_IDX, max(int(self.ctl[CTL_FENCE_FLOOR_IDX]), fence))
                return i
        raise CapacityError(f"all {n} lock slots of system {self.system.name!r} are held or waited for (MAX_LOCKS={n})")

    def _claim(self, i: int, raw: bytes, h: int) -> None:
        base = i * LOCK_SLOT_WORDS
        floor = max(int(self.ctl[CTL_FENCE_FLOOR_IDX]), int(self.ctl[CTL_FENCE_BASE_IDX]))
        KW.store_word(self.slots, base + LK_FENCE_IDX, max(floor, int(self.slots[base + LK_FENCE_IDX])))
        KW.store_word(self.slots, base + LK_NAME_LEN_IDX, len(raw))
        KW.store_words(self.slots, base + LK_NAME_IDX, L.text_words(raw, LK_NAME_BYTES // 8))
        KW.word_cas(self._addr(i, LK_HASH_IDX), int(self.slots[base + LK_HASH_IDX]), h)

    def _name(self, slot: int) -> bytes:
        base = slot * LOCK_SLOT_WORDS
        n = int(self.slots[base + LK_NAME_LEN_IDX])
        return self.slots[base + LK_NAME_IDX : base + LK_NAME_IDX + 8].tobytes()[: max(0, n)]

    def _reserve(self, slot: int) -> None:
        """The next fence would pass the durable high-water mark: raise it in L3, then here."""
        if self.store is None:
            raise TierError("this handle has no L3 store: it cannot issue fencing numbers")
        need = int(self.slots[slot * LOCK_SLOT_WORDS + LK_FENCE_IDX]) + 1
        limit = self.store.reserve(FENCE_KEY, max(need, int(self.ctl[CTL_FENCE_LIMIT_IDX])), FENCE_BLOCK)
        addr = self.ctl_addr + CTL_FENCE_LIMIT_IDX * 8
        while True:
            cur = KW.word_load(addr)
            if cur >= limit or KW.word_cas(addr, cur, limit) == cur:
                return

    # ---------------------------------------------------------------------------------- verbs
    def _attempt(self, name: str, lease_ns: int) -> tuple[int, int, int]:
        """One try: (fence or BUSY, slot, hash), resolving the name again if its slot moved and
        reserving fences when the mark is reached."""
        for _ in range(8):
            slot, h = self._slot(name)
            fence = self._try(self._addr(slot), self.ctl_addr, h, self.system.owner, lease_ns)
            if fence == S.NOT_FOUND:
                self._slot_of.pop(name, None)
            elif fence == S.RESERVE:
                self._reserve(slot)
            else:
                return fence, slot, h
        return S.BUSY, slot, h

    def acquire(
        self, name: str, timeout: Duration | None = None, lease: Duration | None = None, scope: str = "local"
    ) -> LockToken:
        """Take ``name``; waits up to ``timeout`` (seconds or timedelta; None: forever) and raises
        ``LockTimeout``. With ``lease`` the lock frees itself when the lease runs out. ``scope``:
        ``"local"`` (this host's processes) or ``"cluster"`` (every host: needs a cluster)."""
        self.system.check_open("the lock table")
        if scope != "local":
            return self._scope(scope).acquire(name, timeout, lease)
        lease_ns = duration_ns(lease, "lease")
        timeout = seconds(timeout, "timeout", allow_zero=True)
        owner = self.system.owner
        fence, slot, h = self._attempt(name, lease_ns)
        if fence > 0:
            return LockToken(name, fence, owner, slot, h)
        # Spin briefly before queueing to sleep: most critical sections are shorter than a wake-up.
        # Not when others already sleep for it: then the holder is likely waiting for a CPU that
        # spinning would take from it (more contenders than cores).
        spin_end = time.perf_counter() + SPIN_S
        while self.slots[slot * LOCK_SLOT_WORDS + LK_WAITERS_IDX] == 0 and time.perf_counter() < spin_end:
            fence, slot, h = self._attempt(name, lease_ns)
            if fence > 0:
                return LockToken(name, fence, owner, slot, h)
        return self._wait(name, slot, h, lease_ns, timeout)

    def _wait(self, name: str, slot: int, h: int, lease_ns: int, timeout: float | None) -> LockToken:
        return run_sleeps(self._wait_steps(name, slot, h, lease_ns, timeout))

    async def acquire_async(
        self, name: str, timeout: Duration | None = None, lease: Duration | None = None
    ) -> LockToken:
        """:meth:`acquire` for coroutines: the wait sleeps in the process's waker thread, never in
        the event loop's, so other tasks keep running; cancelling it leaves the lock untaken and
        passes on any wake-up meant for this waiter."""
        self.system.check_open("the lock table")
        lease_ns = duration_ns(lease, "lease")
        timeout = seconds(timeout, "timeout", allow_zero=True)
        fence, slot, h = self._attempt(name, lease_ns)
        if fence > 0:
            return LockToken(name, fence, self.system.owner, slot, h)
        return await arun_sleeps(self._wait_steps(name, slot, h, lease_ns, timeout))

    def _wait_steps(self, name: str, slot: int, h: int, lease_ns: int, timeout: float | None) -> WaitSteps[LockToken]:
        """The wait for a held lock, as a wait generator (shm/wait.py): take-over of a dead or
        expired holder, the starvation claim, the timeout; yields the slot's notify word to sleep
        on and returns the token."""
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        owner = self.system.owner
        claimed = False  # this waiter holds the slot's HANDOFF claim
        next_check = start
        KL.lock_wait_count(self._addr(slot), 1)
        try:
            while True:
                base = slot * LOCK_SLOT_WORDS
                seen = KW.word_load(self._addr(slot, LK_NOTIFY_IDX))
                fence, slot2, h = self._attempt(name, lease_ns)
                if fence > 0:
                    claimed = False  # a grant to the claimer clears the claim
                    return LockToken(name, fence, owner, slot2, h)
                if slot2 != slot:  # the name moved to another slot: wait there
                    if claimed:
                        self._handoff(self._addr(slot), owner, 0)
                        claimed = False
                    KL.lock_wait_count(self._addr(slot2), 1)
                    KL.lock_wait_count(self._addr(slot), -1)
                    slot = slot2
                    continue
                holder = int(self.slots[base + LK_LOCK_IDX])
                lease_end = int(self.slots[base + LK_LEASE_IDX])
                # Liveness (a /proc read) at once, then every LIVENESS_CHECK_S: not on every wake,
                # which under contention is every release.
                now = time.monotonic()
                check = now >= next_check
                if check:
                    next_check = now + LIVENESS_CHECK_S
                expired = lease_end and time.time_ns() >= lease_end
                if holder and (expired or (check and not self.system.owner_alive(holder))):
                    fence = KL.lock_take_over(self._addr(slot), self.ctl_addr, h, holder, owner, lease_ns)
                    if fence == S.RESERVE:
                        self._reserve(slot)
                    if fence > 0:
                        if claimed:
                            self._handoff(self._addr(slot), owner, 0)
                            claimed = False
                        return LockToken(name, fence, owner, slot, h)
                claimed = self._starvation(slot, now - start, check)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    pid = self.system.members.owner_pid(holder) if holder else 0
                    raise LockTimeout(
                        f"lock {name!r} is held (fence {int(self.slots[base + LK_FENCE_IDX])}"
                        f"{f', by pid {pid}' if pid else ''}); waited {timeout:g}s"
                    )
                wait = LIVENESS_CHECK_S if left is None else min(left, LIVENESS_CHECK_S)
                if lease_end:
                    wait = min(wait, max(0.0, (lease_end - time.time_ns()) / 1e9))
                yield ((self._addr(slot, LK_NOTIFY_IDX), seen),), wait
        except BaseException:
            # Leaving without the lock (timeout, Ctrl-C): a wake meant for this waiter goes on.
            futex_wake(self._addr(slot, LK_NOTIFY_IDX), 1)
            raise
        finally:
            if claimed:
                self._handoff(self._addr(slot), owner, 0)
            KL.lock_wait_count(self._addr(slot), -1)

    def _starvation(self, slot: int, waited: float, check: bool) -> bool:
        """The starvation bound: claim the next turn after :data:`STARVATION_S`, and (when
        ``check``) drop a claim left by a waiter that died or was stopped (a hostile or stale word
        is dropped the same way). Returns whether this waiter holds the claim."""
        owner = self.system.owner
        current = int(self.slots[slot * LOCK_SLOT_WORDS + LK_HANDOFF_IDX])
        if current == owner:
            return True
        if current != 0:
            if not check:
                return False
            pid = self.system.members.owner_pid(current)
            if not self.system.owner_alive(current) or not pid or not process_runnable(pid):
                self._handoff(self._addr(slot), current, 0)
            return False
        if waited >= STARVATION_S:
            return self._handoff(self._addr(slot), 0, owner) == 0
        return False

    def _scope(self, scope: object) -> Any:
        return remote_scope(self.scoped, scope)

    def release(self, token: LockToken) -> None:
        """Release; ``StaleToken`` if the token no longer holds the lock."""
        self.system.check_open("the lock table")
        if not isinstance(token, LockToken) and hasattr(token, "scope"):
            return self._scope(token.scope).release(token)
        self._check_token(token, "release_lock")
        h = token.key_hash or name_hash(validate_lock_name(token.name))
        r = self._release(self._addr(token.slot), h, token.owner, token.fence)
        if r == S.STALE:
            futex_wake(self._addr(token.slot, LK_NOTIFY_IDX))  # the kernel freed it: let a waiter in
            raise StaleToken(
                f"token for lock {token.name!r} (fence {token.fence}) is stale: its lease ran out or it was taken over"
            )
        if r == WAKE_ONE or r == WAKE_ALL:
            futex_wake(self._addr(token.slot, LK_NOTIFY_IDX), 1 if r == WAKE_ONE else 2**31 - 1)

    def extend(self, token: LockToken, lease: Duration | None) -> LockToken:
        """Give a held lock a new lease (from now; None: no lease). Returns the token (its fence is
        unchanged); ``StaleToken`` if the lock was lost (lease ran out, or taken over)."""
        self.system.check_open("the lock table")
        if not isinstance(token, LockToken) and hasattr(token, "scope"):
            return self._scope(token.scope).extend(token, lease)
        self._check_token(token, "extend_lock")
        lease_ns = duration_ns(lease, "lease")
        h = token.key_hash or name_hash(validate_lock_name(token.name))
        if self._extend(self._addr(token.slot), h, token.owner, token.fence, lease_ns) != S.OK:
            raise StaleToken(f"token for lock {token.name!r} (fence {token.fence}) no longer holds the lock")
        return token

    def _check_token(self, token, what: str) -> None:
        if not isinstance(token, LockToken):
            raise ConfigError(f"{what} takes a LockToken, got {type(token).__name__}")
        if not 0 <= token.slot < self.layout.max_locks:  # a forged token must not reach memory
            raise StaleToken(f"token for lock {token.name!r} names slot {token.slot}, not one of this system's")

    @contextlib.contextmanager
    def lock(
        self, name: str, timeout: Duration | None = None, lease: Duration | None = None, scope: str = "local"
    ) -> Iterator[LockToken]:
        self.system.check_open("the lock table")
        token = (
            self.fast_acquire(name, timeout, lease) if scope == "local" else self.acquire(name, timeout, lease, scope)
        )
        try:
            yield token
        finally:
            self.fast_release(token)

    def stats(self) -> dict:
        """The Part protocol's counters: slots, names in use, locks held, and each holder."""
        holders = self.holders()
        return {
            "slots": self.layout.max_locks,
            "named": len(holders),
            "held": sum(1 for h in holders if h["holder"]),
            "fence_limit": int(self.ctl[CTL_FENCE_LIMIT_IDX]),
            "holders": holders,
        }

    def verify(self) -> list[str]:
        """Every slot: a known hash state, a name that fits, a fence within the reserved limit, no
        negative waiter count, and names unique. Reads only. ``[]`` when sound."""
        problems, names = [], set()
        limit = int(self.ctl[CTL_FENCE_LIMIT_IDX])
        for i in range(self.layout.max_locks):
            w = self.slots[i * LOCK_SLOT_WORDS : (i + 1) * LOCK_SLOT_WORDS]
            h, fence, n = int(w[LK_HASH_IDX]), int(w[LK_FENCE_IDX]), int(w[LK_NAME_LEN_IDX])
            waiters = int(w[LK_WAITERS_IDX])
            if h < 0 or fence < 0 or fence > limit or waiters < 0:
                problems.append(f"lock slot {i}: hash {h}, fence {fence} (limit {limit}), waiters {waiters}")
            elif h >= FIRST_HASH:
                name = self._name(i) if 0 < n <= LK_NAME_BYTES else None
                if name is None or name in names:
                    problems.append(f"lock slot {i}: name length {n} impossible or name repeated")
                names.add(name)
        return problems

    def close(self) -> None:
        """Nothing to release: the views go with the system's segments."""

    def holders(self) -> list[dict]:
        """Every named lock with its holder's owner word (0 = free) and last fence."""
        out = []
        for i in range(self.layout.max_locks):
            base = i * LOCK_SLOT_WORDS
            if int(self.slots[base + LK_HASH_IDX]) >= FIRST_HASH:
                out.append(
                    {
                        "name": self._name(i).decode("utf-8", "replace"),
                        "holder": int(self.slots[base + LK_LOCK_IDX]),
                        "fence": int(self.slots[base + LK_FENCE_IDX]),
                        "lease_ns": int(self.slots[base + LK_LEASE_IDX]),
                    }
                )
        return out
