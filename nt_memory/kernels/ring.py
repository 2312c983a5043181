"""A ring of variable-size records in shared memory, with 64-bit positions that never wrap.

Appenders are serialised by a lock word set by one CAS to the appender's owner word, held only
while a record is copied in (tens of nanoseconds), so an appender that dies is recognisable through
the member table and its lock is taken over. Nothing an appender does is visible before it
publishes the new TAIL (release), so a dead appender's half-written record is simply overwritten.

With ``respect_head`` the ring is a queue: an append that would overwrite a record before HEAD (not
yet consumed) returns FULL instead. The write-behind journal uses it so; its single consumer (the
flusher) advances HEAD after it has made the records durable.

Ring header (int64 words, one 64-byte line per group written together)::

    line 0  CAPACITY (bytes, multiple of 8)
    line 1  LOCK                     appenders' lock word (owner word, 0 = free)
    line 2  TAIL                     end of the last committed record (release-stored)
    line 3  HEAD                     consumed up to here (queue mode)
    line 4  APPENDS APPEND_BYTES     statistics
    line 5  CONSUMER_LOCK            who consumes (queue mode: the flusher), an owner word

Record at byte offset ``pos % CAPACITY`` (8-byte aligned, never split across the end)::

    word 0  POS      the record's position; written last (release) so a reader can tell a record
                     of this lap from a stale one
    word 1  META     payload length (low 32 bits) | kind << 32; kind PAD means "skip to the end"
    +16     payload, zero-padded to 8 bytes
"""

from nt_memory.kernels._jit import jit
from nt_memory.kernels.atomics import fetch_add, load_acquire, store_release
from nt_memory.kernels.lockword import lockword_acquire, lockword_release, lockword_steal, lockword_try_acquire
from nt_memory.kernels.status import FULL, OK, VALUE_TOO_LARGE

RING_CAPACITY_IDX = 0
RING_LOCK_IDX = 8
RING_TAIL_IDX = 16
RING_HEAD_IDX = 24
RING_APPENDS_IDX = 32
RING_APPEND_BYTES_IDX = 33
RING_CONSUMER_LOCK_IDX = 40
RING_HDR_WORDS = 48
RING_HDR_BYTES = RING_HDR_WORDS * 8

RECORD_HDR_BYTES = 16
KIND_PAD = 0xFF


@jit
def record_bytes(payload_len):
    """Bytes a record of ``payload_len`` takes in the ring, header and padding included."""
    return RECORD_HDR_BYTES + ((payload_len + 7) & ~7)


@jit
def ring_lock(hdr, owner):
    return lockword_acquire(hdr, RING_LOCK_IDX, owner)


@jit
def ring_unlock(hdr):
    lockword_release(hdr, RING_LOCK_IDX)


@jit
def ring_reserve(hdr, data_w, payload_len, kind, respect_head):
    """Reserve room for a record (the caller holds the lock); returns its position, or FULL /
    VALUE_TOO_LARGE. Writes a PAD record first when the record would not fit before the end."""
    cap = hdr[RING_CAPACITY_IDX]
    need = record_bytes(payload_len)
    if need > cap // 2:
        return VALUE_TOO_LARGE
    tail = hdr[RING_TAIL_IDX]
    off = tail % cap
    pad = cap - off if off + need > cap else 0
    if respect_head and tail + pad + need - load_acquire(hdr, RING_HEAD_IDX) > cap:
        return FULL
    if pad:
        data_w[(off >> 3) + 1] = KIND_PAD << 32
        store_release(data_w, off >> 3, tail)
        tail += pad
        off = 0
    data_w[(off >> 3) + 1] = payload_len | (kind << 32)
    return tail


@jit
def ring_commit(hdr, data_w, pos, payload_len):
    """Publish the record at ``pos``: its POS word, then TAIL (both release). Caller holds the lock
    and releases it after."""
    cap = hdr[RING_CAPACITY_IDX]
    store_release(data_w, (pos % cap) >> 3, pos)
    store_release(hdr, RING_TAIL_IDX, pos + record_bytes(payload_len))
    fetch_add(hdr, RING_APPENDS_IDX, 1)
    fetch_add(hdr, RING_APPEND_BYTES_IDX, record_bytes(payload_len))


@jit
def ring_record_at(hdr, data_w, pos):
    """The record at ``pos`` (below TAIL): (next position, payload byte offset, payload length,
    kind); a PAD record reports kind PAD and its next position is the start of the next lap."""
    cap = hdr[RING_CAPACITY_IDX]
    off = pos % cap
    meta = data_w[(off >> 3) + 1]
    kind = (meta >> 32) & 0xFF
    if kind == KIND_PAD:
        return pos + (cap - off), off + RECORD_HDR_BYTES, 0, kind
    n = meta & 0xFFFFFFFF
    return pos + record_bytes(n), off + RECORD_HDR_BYTES, n, kind


@jit
def ring_recover(hdr, lock_idx, dead_owner):
    """Free a lock word (append lock or consumer lock) held by a dead owner. Safe: an appender's
    work becomes visible only through TAIL, which it had not published."""
    return 1 if lockword_steal(hdr, lock_idx, dead_owner, 0) else 0


@jit
def ring_try_lock_consumer(hdr, owner):
    return (
        lockword_try_acquire(hdr, RING_CONSUMER_LOCK_IDX, owner) or load_acquire(hdr, RING_CONSUMER_LOCK_IDX) == owner
    )


@jit
def ring_set_head(hdr, pos):
    store_release(hdr, RING_HEAD_IDX, pos)
    return OK


def ring_init(hdr, capacity):
    hdr[:RING_HDR_WORDS] = 0
    hdr[RING_CAPACITY_IDX] = capacity
