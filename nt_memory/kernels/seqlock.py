"""The seqlock: one sequence word guarding a record that readers copy without taking a lock.

Writers (already exclusive by other means: a stripe lock) call :func:`seq_write_begin`, write, and
:func:`seq_write_end`. Readers call :func:`seq_read_begin`, copy, then :func:`seq_read_valid`; on
False they retry. A reader never returns a value copied while the sequence was odd or changed.

The begin is robust to a writer that died mid-write: an odd sequence left behind is moved to the
*next* odd value, never to an even one, so no reader can take a half-written record as stable.
"""

from nt_memory.kernels._jit import jit
from nt_memory.kernels.atomics import fence_acquire, fence_release, load_acquire, load_relaxed, store_release


@jit(inline="always")
def seq_write_begin(words, idx):
    """Make the sequence odd (and different from any value a reader may hold); returns that value.

    Caller: the exclusive writer of the record. The release fence keeps the record's stores after
    the odd sequence is visible.
    """
    s = load_relaxed(words, idx)
    odd = s + 1 + (s & 1)
    store_release(words, idx, odd)
    fence_release()
    return odd


@jit(inline="always")
def seq_write_end(words, idx, odd):
    """Publish the record: the even sequence is stored with release, after every record store."""
    store_release(words, idx, odd + 1)


@jit(inline="always")
def seq_read_begin(words, idx):
    """The sequence as a reader starts (acquire: the record loads that follow cannot move above it).

    Odd means a write is in progress: the caller should spin and call again.
    """
    return load_acquire(words, idx)


@jit(inline="always")
def seq_read_valid(words, idx, start):
    """True when the copy made since ``seq_read_begin`` returned ``start`` is a stable snapshot.

    The acquire fence keeps the record loads above the re-read of the sequence.
    """
    fence_acquire()
    return (start & 1) == 0 and load_relaxed(words, idx) == start
