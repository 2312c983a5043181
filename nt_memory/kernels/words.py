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


# The same, on a word view of a segment (a 1-D int64 numpy array), for Python code that writes shared
# memory: every such write goes through one of these, so each is a whole-word release-store that a
# reader in another process sees whole and in program order. Unlike the intrinsics they check the
# index, since their callers are Python.


@jit
def _check_span(words, idx, n):
    if idx < 0 or n < 0 or idx + n > words.size:
        raise IndexError("word index out of the view")


@jit
def store_word(words, idx, value):
    """Release-store ``value`` into ``words[idx]``."""
    _check_span(words, idx, 1)
    store_release(words, idx, value)


@jit
def store_words(words, idx, values):
    """Release-store each of ``values`` (an int64 array) into ``words[idx:]``, in order."""
    _check_span(words, idx, values.size)
    for i in range(values.size):
        store_release(words, idx + i, values[i])


@jit
def fill_words(words, lo, hi, value):
    """Release-store ``value`` into ``words[lo:hi]``, in order."""
    _check_span(words, lo, hi - lo)
    for i in range(lo, hi):
        store_release(words, i, value)


@jit
def add_word(words, idx, delta):
    """Atomically add ``delta`` to ``words[idx]``; returns the previous value."""
    _check_span(words, idx, 1)
    return fetch_add(words, idx, delta)
