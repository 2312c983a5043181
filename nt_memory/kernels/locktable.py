"""Named locks with fencing numbers and leases, one slot per lock name, in shared memory.

Slot (16 int64 words)::

    0 HASH        name hash (0 = free slot); slots are claimed under the table's control lock
    1 LOCK        lock word: the holder's owner word (kernels/lockword.py), 0 = free
    2 FENCE       the last fencing number issued: it only grows
    3 LEASE       wall-clock ns when the holder's lease ends (0 = no lease)
    4 NOTIFY      bumped on every release: waiters sleep on it (a futex word)
    5 WAITERS     processes sleeping for the lock: newcomers queue behind them instead of barging
    6 NAME_LEN    7-14 NAME (64 bytes)

A token is valid while LOCK is its owner, FENCE is its fence and the lease (if any) has not run
out; a release with any other token is refused (STALE), so a holder whose lease ended or whose
lock was taken over cannot release its successor's lock.
"""

from nt_memory.kernels._jit import jit
from nt_memory.kernels.atomics import address_to_words, clock_ns, fetch_add, load_acquire, store_release
from nt_memory.kernels.lockword import lockword_release, lockword_steal, lockword_try_acquire
from nt_memory.kernels.status import BUSY, STALE

LOCK_SLOT_WORDS = 16
LK_HASH_IDX = 0
LK_LOCK_IDX = 1
LK_FENCE_IDX = 2
LK_LEASE_IDX = 3
LK_NOTIFY_IDX = 4
LK_WAITERS_IDX = 5
LK_NAME_LEN_IDX = 6
LK_NAME_IDX = 7
LK_NAME_BYTES = 64


@jit
def _granted(w, lease_ns):
    fence = fetch_add(w, LK_FENCE_IDX, 1) + 1
    store_release(w, LK_LEASE_IDX, clock_ns() + lease_ns if lease_ns > 0 else 0)
    return fence


@jit
def lock_try_acquire(slot_addr, owner, lease_ns, queued):
    """Take the lock if free; returns its new fencing number (> 0) or BUSY. A newcomer
    (``queued`` False) does not take it while others sleep for it: they go first."""
    w = address_to_words(slot_addr, LOCK_SLOT_WORDS)
    if not queued and load_acquire(w, LK_WAITERS_IDX) > 0:
        return BUSY
    if lockword_try_acquire(w, LK_LOCK_IDX, owner):
        return _granted(w, lease_ns)
    return BUSY


@jit
def lock_take_over(slot_addr, holder, owner, lease_ns):
    """Take the lock from ``holder`` (found dead, or its lease over); new fence or BUSY."""
    w = address_to_words(slot_addr, LOCK_SLOT_WORDS)
    if lockword_steal(w, LK_LOCK_IDX, holder, owner):
        return _granted(w, lease_ns)
    return BUSY


@jit
def lock_release(slot_addr, owner, fence):
    """Release with a token: returns the number of sleeping waiters (>= 0, wake them if any) or
    STALE (taken over, or the lease ran out: then the lock is freed for the next holder)."""
    w = address_to_words(slot_addr, LOCK_SLOT_WORDS)
    if load_acquire(w, LK_LOCK_IDX) != owner or load_acquire(w, LK_FENCE_IDX) != fence:
        return STALE
    lease = load_acquire(w, LK_LEASE_IDX)
    stale = lease != 0 and clock_ns() >= lease
    store_release(w, LK_LEASE_IDX, 0)
    lockword_release(w, LK_LOCK_IDX)
    fetch_add(w, LK_NOTIFY_IDX, 1)
    if stale:
        return STALE
    return load_acquire(w, LK_WAITERS_IDX)


@jit
def lock_wait_count(slot_addr, delta):
    w = address_to_words(slot_addr, LOCK_SLOT_WORDS)
    return fetch_add(w, LK_WAITERS_IDX, delta)
