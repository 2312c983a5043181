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
            REMOTE_SEQ FORWARD_POS FORWARD_NO LOCAL_COUNT FORWARD_LOCAL   broadcast mode, for the
                                     cluster bridge (nt_memory/cluster): the stream sequence of
                                     the last message it injected; where its reader of this host's
                                     messages stands and the number of the message there; this
                                     host's messages published (each one's number among them is in
                                     its META); the next of those the reader expects;
            BRIDGE_WAITERS           the bridge's reader asleep on NOTIFY (woken like WAITERS)
    line 4  APPENDS APPEND_BYTES     statistics
    line 5  CONSUMER_LOCK            who consumes (queue mode: the flusher), an owner word
    line 6  TAIL_INTENT LATEST MSG_COUNT   broadcast mode: where the appender is about to write
                                     (published before it overwrites anything), the newest
                                     record's position, messages published
    line 7  NOTIFY WAITERS SPINNERS  a futex word bumped on every publish; sleeping receivers;
                                     1 while one receiver polls before it sleeps (one at a
                                     time, and none while others sleep: spinners on a busy
                                     host take the CPU the woken ones need; a receiver killed
                                     while polling leaves it 1, and waits then just sleep)

Broadcast mode (pub/sub): appends never wait for readers; each receiver keeps its own cursor. A
receiver copies a record, then re-reads TAIL_INTENT: if the appender may have started overwriting
the record, the copy is discarded and the receiver jumps to LATEST, counting what it skipped from
the message numbers (each record starts with its own), so received + dropped = published exactly.

Every kernel takes the capacity from the caller's private copy (validated at attach against the
checksummed segment header), never from the shared CAPACITY word, and checks each record's length
against it before touching the payload: a co-tenant that rewrites a word gets garbage or a status,
never a load or store outside the ring. Record walks are bounded by the number of records a ring of
that capacity can hold.

Record at byte offset ``pos % CAPACITY`` (16-byte aligned, never split across the end: with a
capacity that is a multiple of 64, the 16-byte header of a PAD record always fits before the end)::

    word 0  POS      the record's position; written last (release) so a reader can tell a record
                     of this lap from a stale one
    word 1  META     payload length (low 32 bits) | kind << 32 | local number << 40; kind PAD means
                     "skip to the end"; a pub/sub message of kind MSG carries its number among
                     this host's messages (mod 2**24), so the cluster bridge's reader, lapped,
                     knows how many of those it lost
    +16     payload, padded to 16 bytes
"""

from nt_memory.kernels._jit import jit
from nt_memory.kernels.atomics import (
    address_to_bytes,
    address_to_words,
    copy_bytes,
    fence_acquire,
    fence_release,
    fetch_add,
    load_acquire,
    store_release,
)
from nt_memory.kernels.layout.ring import (
    KIND_CORRUPT,
    KIND_MSG,
    KIND_PAD,
    KIND_REMOTE,
    LOCAL_SEQ_MASK,
    RECORD_HDR_BYTES,
    RING_APPEND_BYTES_IDX,
    RING_APPENDS_IDX,
    RING_BRIDGE_WAITERS_IDX,
    RING_CAPACITY_IDX,
    RING_CONSUMER_LOCK_IDX,
    RING_HDR_WORDS,
    RING_HEAD_IDX,
    RING_LATEST_IDX,
    RING_LOCAL_COUNT_IDX,
    RING_LOCK_IDX,
    RING_MSG_COUNT_IDX,
    RING_NOTIFY_IDX,
    RING_REMOTE_SEQ_IDX,
    RING_TAIL_IDX,
    RING_TAIL_INTENT_IDX,
    RING_WAITERS_IDX,
)
from nt_memory.kernels.layout.ring import record_bytes as layout_record_bytes
from nt_memory.kernels.lockword import lockword_acquire, lockword_release, lockword_steal, lockword_try_acquire
from nt_memory.kernels.status import BUSY, CORRUPT, FULL, NOT_FOUND, OK, OUT_TOO_SMALL, VALUE_TOO_LARGE

# The formula lives with the layout, where Python code that sizes a ring reads it without numba.
record_bytes = jit(layout_record_bytes)


@jit
def ring_lock(hdr, owner):
    return lockword_acquire(hdr, RING_LOCK_IDX, owner)


@jit
def ring_unlock(hdr):
    lockword_release(hdr, RING_LOCK_IDX)


@jit(inline="always")  # as a call: 49 more instructions per put under callgrind
def ring_reserve(hdr, data_w, cap, payload_len, kind, respect_head):
    """Reserve room for a record (the caller holds the lock); returns its position, or FULL /
    VALUE_TOO_LARGE / CORRUPT (a negative TAIL). Writes a PAD record first when the record would
    not fit before the end."""
    need = record_bytes(payload_len)
    if need > cap // 2:
        return VALUE_TOO_LARGE
    tail = hdr[RING_TAIL_IDX]
    if tail < 0 or tail & 15:
        return CORRUPT  # positions are record starts: 16-byte aligned (record_bytes)
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
def ring_commit(hdr, data_w, cap, pos, payload_len):
    """Publish the record at ``pos``: its POS word, then TAIL (both release), and count it. Caller
    holds the lock and releases it after."""
    store_release(data_w, (pos % cap) >> 3, pos)
    store_release(hdr, RING_TAIL_IDX, pos + record_bytes(payload_len))
    # Plain adds: only the lock holder writes them (a lock is taken over from dead owners only).
    # As fetch_adds they were two locked instructions in every put and every publish.
    hdr[RING_APPENDS_IDX] += 1
    hdr[RING_APPEND_BYTES_IDX] += record_bytes(payload_len)


@jit
def ring_record_at(data_w, cap, pos):
    """The record at ``pos`` (below TAIL): (next position, payload byte offset, payload length,
    kind); a PAD record reports kind PAD and its next position is the start of the next lap; a
    record whose length would run past the ring reports KIND_CORRUPT."""
    off = pos % cap
    if off & 15 or off + RECORD_HDR_BYTES > cap:
        return pos + 16, 0, 0, KIND_CORRUPT
    meta = data_w[(off >> 3) + 1]
    kind = (meta >> 32) & 0xFF
    if kind == KIND_PAD:
        return pos + (cap - off), off + RECORD_HDR_BYTES, 0, kind
    n = meta & 0xFFFFFFFF
    if off + record_bytes(n) > cap:
        return pos + 16, 0, 0, KIND_CORRUPT
    return pos + record_bytes(n), off + RECORD_HDR_BYTES, n, kind


@jit
def ring_max_records(cap):
    """An upper bound on the records between any two positions one ring apart: bounds every walk."""
    return cap // RECORD_HDR_BYTES + 1


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


@jit
def ring_publish(hdr_addr, data_addr, cap, owner, msg):
    """Broadcast ``msg`` (bytes): many publishers, serialised by the append lock; never waits for
    receivers. Returns ``message number << 1 | 1 if receivers sleep`` (>= 0: wake them if the low
    bit is set), or BUSY / VALUE_TOO_LARGE / CORRUPT. The record's payload is its message number
    (8 bytes) then ``msg``."""
    return ring_publish_kind(hdr_addr, data_addr, cap, owner, msg, KIND_MSG, 0)


@jit
def ring_inject(hdr_addr, data_addr, cap, owner, msg, remote_seq):
    """:func:`ring_publish` for the cluster bridge: a message from another host (kind REMOTE, so
    the bridge does not send it back out), noting the stream sequence it came with (REMOTE_SEQ)
    under the same lock, after the record is published, so a bridge that takes over resumes after
    it."""
    return ring_publish_kind(hdr_addr, data_addr, cap, owner, msg, KIND_REMOTE, remote_seq)


@jit(inline="always")
def ring_publish_kind(hdr_addr, data_addr, cap, owner, msg, kind, remote_seq):
    hdr = address_to_words(hdr_addr, RING_HDR_WORDS)
    data_w = address_to_words(data_addr, cap >> 3)
    data_b = address_to_bytes(data_addr, cap)
    n = 8 + len(msg)
    if record_bytes(n) > cap // 4:
        return VALUE_TOO_LARGE
    if not lockword_acquire(hdr, RING_LOCK_IDX, owner):
        return BUSY
    tail = hdr[RING_TAIL_IDX]
    if tail < 0 or tail & 15:
        lockword_release(hdr, RING_LOCK_IDX)
        return CORRUPT
    off = tail % cap
    need = record_bytes(n)
    end = tail + (cap - off if off + need > cap else 0) + need
    # Receivers check this after copying: anything within CAP of it may be overwritten now.
    store_release(hdr, RING_TAIL_INTENT_IDX, end)
    fence_release()
    tag = kind
    if kind == KIND_MSG:
        local = hdr[RING_LOCAL_COUNT_IDX]
        hdr[RING_LOCAL_COUNT_IDX] = local + 1
        tag = kind | ((local & LOCAL_SEQ_MASK) << 8)
    pos = ring_reserve(hdr, data_w, cap, n, tag, False)
    msg_no = hdr[RING_MSG_COUNT_IDX]
    poff = (pos % cap) + RECORD_HDR_BYTES
    data_w[poff >> 3] = msg_no
    copy_bytes(data_b, poff + 8, msg, 0, len(msg))
    ring_commit(hdr, data_w, cap, pos, n)
    store_release(hdr, RING_LATEST_IDX, pos)
    store_release(hdr, RING_MSG_COUNT_IDX, msg_no + 1)
    if remote_seq > 0:
        store_release(hdr, RING_REMOTE_SEQ_IDX, remote_seq)
    lockword_release(hdr, RING_LOCK_IDX)
    fetch_add(hdr, RING_NOTIFY_IDX, 1)
    sleeping = load_acquire(hdr, RING_WAITERS_IDX) > 0 or load_acquire(hdr, RING_BRIDGE_WAITERS_IDX) > 0
    return (msg_no << 1) | (1 if sleeping else 0)


@jit
def ring_snapshot(hdr_addr, owner):
    """(TAIL, MSG_COUNT) read together under the append lock: where a new receiver starts, and the
    number of its first message. (-1, BUSY) if the lock stayed held."""
    hdr = address_to_words(hdr_addr, RING_HDR_WORDS)
    if not lockword_acquire(hdr, RING_LOCK_IDX, owner):
        return -1, BUSY
    tail = hdr[RING_TAIL_IDX]
    count = hdr[RING_MSG_COUNT_IDX]
    lockword_release(hdr, RING_LOCK_IDX)
    return tail, count


@jit
def ring_receive(hdr_addr, data_addr, cap, cursor, out):
    """The next message at or after ``cursor``, for one receiver. No lock.

    Returns (length or NOT_FOUND / OUT_TOO_SMALL, next cursor, message number); the message is
    copied into ``out``. A receiver that was lapped resumes at the newest record: the gap in
    message numbers is what it lost."""
    n, nxt, msg_no, _kind = ring_receive_kind(hdr_addr, data_addr, cap, cursor, out)
    return n, nxt, msg_no


@jit
def ring_receive_any(hdr_addr, data_addr, cap, cursor, out):
    """:func:`ring_receive` that also says the message's kind (KIND_MSG or KIND_REMOTE) and, for
    KIND_MSG, its number among this host's messages: ``kind | local number << 8``. The cluster
    bridge's reader, which sends out only this host's messages and counts those it lost."""
    return ring_receive_kind(hdr_addr, data_addr, cap, cursor, out)


@jit
def ring_skip(hdr_addr, owner, count, remote_seq):
    """Number ``count`` messages that will never arrive (another host's, lost before they left it):
    every receiver counts them as dropped at its next message. Notes ``remote_seq`` as
    :func:`ring_inject` does. OK or BUSY."""
    hdr = address_to_words(hdr_addr, RING_HDR_WORDS)
    if not lockword_acquire(hdr, RING_LOCK_IDX, owner):
        return BUSY
    store_release(hdr, RING_MSG_COUNT_IDX, hdr[RING_MSG_COUNT_IDX] + count)
    if remote_seq > 0:
        store_release(hdr, RING_REMOTE_SEQ_IDX, remote_seq)
    lockword_release(hdr, RING_LOCK_IDX)
    return OK


@jit(inline="always")
def ring_receive_kind(hdr_addr, data_addr, cap, cursor, out):
    hdr = address_to_words(hdr_addr, RING_HDR_WORDS)
    data_w = address_to_words(data_addr, cap >> 3)
    data_b = address_to_bytes(data_addr, cap)
    for _ in range(64):
        tail = load_acquire(hdr, RING_TAIL_IDX)
        if cursor >= tail:
            return NOT_FOUND, cursor, -1, 0
        if tail - cursor > cap or load_acquire(hdr, RING_TAIL_INTENT_IDX) - cap > cursor:
            cursor = load_acquire(hdr, RING_LATEST_IDX)  # lapped: skip to the newest
            continue
        off = cursor % cap
        if load_acquire(data_w, off >> 3) != cursor:
            cursor = load_acquire(hdr, RING_LATEST_IDX)
            continue
        nxt, poff, n, kind = ring_record_at(data_w, cap, cursor)
        if kind == KIND_PAD:
            cursor = nxt
            continue
        if kind == KIND_CORRUPT or n < 8 or poff + n > cap:
            cursor = load_acquire(hdr, RING_LATEST_IDX)
            continue
        msg_no = data_w[poff >> 3]
        tag = (data_w[((cursor % cap) >> 3) + 1] >> 32) & 0xFFFFFFFF  # kind | local number << 8
        mlen = n - 8
        if mlen > len(out):
            result = OUT_TOO_SMALL
        else:
            copy_bytes(out, 0, data_b, poff + 8, mlen)  # may be torn: re-checked below
            result = mlen
        fence_acquire()
        if load_acquire(hdr, RING_TAIL_INTENT_IDX) - cap > cursor:
            cursor = load_acquire(hdr, RING_LATEST_IDX)  # overwritten while we copied
            continue
        return result, nxt, msg_no, tag
    return NOT_FOUND, cursor, -1, 0


def ring_init(hdr, capacity):
    hdr[:RING_HDR_WORDS] = 0
    hdr[RING_CAPACITY_IDX] = capacity
