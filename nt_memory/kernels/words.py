"""Atomic word operations on an integer address, callable from Python.

For the slow paths that live in Python (segment state, member table, lock-word inspection): each
call costs one dispatch, so nothing hot uses them. The caller guarantees that ``addr`` points into a
live mapping and is 8-byte aligned.
"""

from nt_memory.kernels._jit import jit
from nt_memory.kernels.atomics import address_to_words, cas, fetch_add, load_acquire, store_release


@jit
def word_load(addr):
    """Acquire-load the int64 at ``addr``."""
    return load_acquire(address_to_words(addr, 1), 0)


@jit
def word_store(addr, value):
    """Release-store ``value`` into the int64 at ``addr``."""
    store_release(address_to_words(addr, 1), 0, value)


@jit
def word_cas(addr, expected, desired):
    """CAS the int64 at ``addr``; returns the value seen (the swap happened iff it equals expected)."""
    return cas(address_to_words(addr, 1), 0, expected, desired)


@jit
def word_fetch_add(addr, delta):
    """Atomically add ``delta`` to the int64 at ``addr``; returns the previous value."""
    return fetch_add(address_to_words(addr, 1), 0, delta)
