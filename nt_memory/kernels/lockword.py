"""The lock word: one int64 that is 0 when free and the holder's *owner word* when held.

One CAS both locks and names the owner (member slot + registration epoch), so there is never a
moment when a lock is held by nobody known: a holder that dies leaves its owner word behind, the
member table says it is dead, and :func:`lockword_steal` hands the word to a live process. Used by
the L1 write stripes, the journal, and every other structure that needs a short exclusive section.
"""

from nt_memory.kernels._jit import jit
from nt_memory.kernels.atomics import cas, cpu_relax, load_relaxed, store_release

SPINS = 1 << 14  # about a millisecond of spinning before a caller reports BUSY


@jit(inline="always")
def lockword_try_acquire(words, idx, owner):
    """Take the lock if it is free. Never blocks."""
    return cas(words, idx, 0, owner) == 0


@jit(inline="always")
def lockword_acquire(words, idx, owner):
    """Spin (test-and-test-and-set, with a pause hint) up to SPINS times; False if still held."""
    for _ in range(SPINS):
        if load_relaxed(words, idx) == 0 and cas(words, idx, 0, owner) == 0:
            return True
        cpu_relax()
    return False


@jit(inline="always")
def lockword_release(words, idx):
    """Release: the stores of the critical section are visible before the word reads free."""
    store_release(words, idx, 0)


@jit(inline="always")
def lockword_steal(words, idx, dead_owner, new_owner):
    """Move the lock from ``dead_owner`` (found dead by the caller) to ``new_owner`` (0 frees it).
    Fails if the word no longer names ``dead_owner`` (someone else got there first)."""
    return dead_owner != 0 and cas(words, idx, dead_owner, new_owner) == dead_owner
