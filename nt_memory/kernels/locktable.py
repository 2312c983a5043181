"""Named locks with fencing numbers and leases, one slot per lock name, in shared memory.

Slot (16 int64 words)::

    0 HASH        name hash (0 = never used, 1 = reclaimed; names hash to >= 2); slots are claimed
                  and reclaimed under the table's control lock
    1 LOCK        lock word: the holder's owner word (kernels/lockword.py), 0 = free
    2 FENCE       the last fencing number issued: it only grows
    3 LEASE       wall-clock ns when the holder's lease ends (0 = no lease)
    4 NOTIFY      bumped on every release: waiters sleep on it (a futex word)
    5 WAITERS     processes sleeping for the lock (a release wakes one of them if any)
    6 NAME_LEN    7-14 NAME (64 bytes)
    15 HANDOFF    0, or the owner word of a waiter that has waited past the starvation bound: the
                  lock is then only granted to it (no barging), and releases wake every waiter

Barging with a starvation bound (what Go's sync.Mutex calls starvation mode): a free lock goes to
whoever tries first, so a lock passed between busy processes does not pay a wake-up per handoff;
a waiter that has slept longer than the bound claims HANDOFF and is next. A claim by a dead or
stopped process is dropped by the other waiters (coordination/locks.py).

Control words (``ctl``, the table's first line) used here: FENCE_LIMIT (word 2). A fence is only
issued at or below it: the limit is a high-water mark made durable in L3 before it is published
here, so after a reboot fences resume above every fence ever issued. An acquisition that would
pass it returns RESERVE, and the caller reserves more (``ColdStore.reserve``) and retries.

A token is valid while LOCK is its owner, FENCE is its fence, HASH its name's and the lease (if
any) has not run out; a release with any other token is refused (STALE), so a holder whose lease
ended or whose lock was taken over cannot release its successor's lock.

Who may call what: any process, any thread; the slot address and the name hash come from the
caller's private view (a slot index it resolved by name). Every kernel checks HASH, so a slot that
was reclaimed and reused for another name is reported as NOT_FOUND (resolve the name again).
"""

from nt_memory.kernels._jit import jit
from nt_memory.kernels.atomics import address_to_words, cas, clock_ns, fetch_add, load_acquire, store_release
from nt_memory.kernels.layout.locktable import (
    CTL_FENCE_LIMIT_IDX,
    HASH_RECLAIMED,
    LK_FENCE_IDX,
    LK_HANDOFF_IDX,
    LK_HASH_IDX,
    LK_LEASE_IDX,
    LK_LOCK_IDX,
    LK_NOTIFY_IDX,
    LK_WAITERS_IDX,
    LOCK_SLOT_WORDS,
    WAKE_ALL,
    WAKE_NONE,
    WAKE_ONE,
)
from nt_memory.kernels.lockword import lockword_release, lockword_steal, lockword_try_acquire
from nt_memory.kernels.status import BUSY, NOT_FOUND, OK, RESERVE, STALE


@jit
def _grant(w, ctl, lease_ns):
    """The caller holds the lock word: issue the next fence if the limit allows (else release and
    return RESERVE)."""
    fence = w[LK_FENCE_IDX] + 1
    if fence > load_acquire(ctl, CTL_FENCE_LIMIT_IDX):
        lockword_release(w, LK_LOCK_IDX)
        return RESERVE
    store_release(w, LK_FENCE_IDX, fence)
    store_release(w, LK_LEASE_IDX, clock_ns() + lease_ns if lease_ns > 0 else 0)
    return fence


@jit
def lock_try_acquire(slot_addr, ctl_addr, h, owner, lease_ns):
    """Take the lock if free; returns its new fencing number (> 0), BUSY, NOT_FOUND (the slot no
    longer holds this name) or RESERVE. While a starved waiter holds HANDOFF, only it may take it."""
    w = address_to_words(slot_addr, LOCK_SLOT_WORDS)
    ctl = address_to_words(ctl_addr, 8)
    if load_acquire(w, LK_HASH_IDX) != h:
        return NOT_FOUND
    handoff = load_acquire(w, LK_HANDOFF_IDX)
    if handoff != 0 and handoff != owner:
        return BUSY
    if not lockword_try_acquire(w, LK_LOCK_IDX, owner):
        return BUSY
    if load_acquire(w, LK_HASH_IDX) != h:  # reclaimed between the check and the CAS
        lockword_release(w, LK_LOCK_IDX)
        return NOT_FOUND
    if handoff != 0:
        cas(w, LK_HANDOFF_IDX, owner, 0)  # served: barging resumes
    return _grant(w, ctl, lease_ns)


@jit
def lock_handoff(slot_addr, expected, new):
    """Set HANDOFF from ``expected`` to ``new`` (claim: 0 -> own owner word; drop: a claimer's word
    -> 0). Returns the word found (== ``expected`` when it was set)."""
    w = address_to_words(slot_addr, LOCK_SLOT_WORDS)
    return cas(w, LK_HANDOFF_IDX, expected, new)


@jit
def lock_take_over(slot_addr, ctl_addr, h, holder, owner, lease_ns):
    """Take the lock from ``holder`` (found dead, or its lease over); new fence, BUSY (someone
    else got there first), NOT_FOUND or RESERVE."""
    w = address_to_words(slot_addr, LOCK_SLOT_WORDS)
    ctl = address_to_words(ctl_addr, 8)
    if load_acquire(w, LK_HASH_IDX) != h:
        return NOT_FOUND
    if not lockword_steal(w, LK_LOCK_IDX, holder, owner):
        return BUSY
    return _grant(w, ctl, lease_ns)


@jit
def _token_holds(w, h, owner, fence):
    return (
        load_acquire(w, LK_HASH_IDX) == h
        and load_acquire(w, LK_LOCK_IDX) == owner
        and load_acquire(w, LK_FENCE_IDX) == fence
    )


@jit
def lock_release(slot_addr, h, owner, fence):
    """Release with a token: returns WAKE_NONE, WAKE_ONE (sleepers: wake one), WAKE_ALL (a starved
    waiter holds HANDOFF: wake every sleeper so that it is among them) or STALE (taken over, or the
    lease ran out: then the lock is freed for the next holder, and the caller wakes every sleeper)."""
    w = address_to_words(slot_addr, LOCK_SLOT_WORDS)
    if not _token_holds(w, h, owner, fence):
        return STALE
    lease = load_acquire(w, LK_LEASE_IDX)
    stale = lease != 0 and clock_ns() >= lease
    store_release(w, LK_LEASE_IDX, 0)
    lockword_release(w, LK_LOCK_IDX)
    fetch_add(w, LK_NOTIFY_IDX, 1)
    if stale:
        return STALE
    if load_acquire(w, LK_WAITERS_IDX) <= 0:
        return WAKE_NONE
    return WAKE_ALL if load_acquire(w, LK_HANDOFF_IDX) != 0 else WAKE_ONE


@jit
def lock_extend(slot_addr, h, owner, fence, lease_ns):
    """Set a held lock's lease to end ``lease_ns`` from now (0: no lease). OK, or STALE if the
    token no longer holds the lock or its lease has already run out."""
    w = address_to_words(slot_addr, LOCK_SLOT_WORDS)
    if not _token_holds(w, h, owner, fence):
        return STALE
    lease = load_acquire(w, LK_LEASE_IDX)
    now = clock_ns()
    if lease != 0 and now >= lease:
        return STALE
    # CAS: a taker that found the lease over stores its own lease; ours must not overwrite it.
    if cas(w, LK_LEASE_IDX, lease, now + lease_ns if lease_ns > 0 else 0) != lease:
        return STALE
    if not _token_holds(w, h, owner, fence):  # taken over meanwhile: the new holder set its lease
        return STALE
    return OK


@jit
def lock_wait_count(slot_addr, delta):
    w = address_to_words(slot_addr, LOCK_SLOT_WORDS)
    return fetch_add(w, LK_WAITERS_IDX, delta)


@jit
def lock_try_reclaim(slot_addr, owner):
    """Free an unused slot for another name: only if nobody holds the lock or waits for it. The
    caller holds the table's control lock. Returns the slot's last fence (>= 0) or BUSY."""
    w = address_to_words(slot_addr, LOCK_SLOT_WORDS)
    if load_acquire(w, LK_WAITERS_IDX) > 0 or not lockword_try_acquire(w, LK_LOCK_IDX, owner):
        return BUSY
    if load_acquire(w, LK_WAITERS_IDX) > 0:
        lockword_release(w, LK_LOCK_IDX)
        return BUSY
    fence = w[LK_FENCE_IDX]
    store_release(w, LK_HASH_IDX, HASH_RECLAIMED)
    lockword_release(w, LK_LOCK_IDX)
    return fence
