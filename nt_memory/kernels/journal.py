"""The write-behind journal's records: a ring (kernels/ring.py) in queue mode, appended to by L1
writers inside their stripe lock and drained in order by one consumer at a time.

Who may call what:

- :func:`journal_append`: a writer that holds the key's L1 stripe (so a key's records are in its
  writes' order). Takes the ring's append lock (one CAS, the writer's owner word) for the copy.
  Before anything becomes visible it stores the record's position in the writer's stripe intent
  (``jpos_words[jpos_idx]``), which is how recovery tells a write whose record reached the journal
  (roll it forward in L1) from one whose record did not (undo it): see ``table_recover``.
- :func:`journal_find`: any process, no lock: the newest unconsumed record of a key.
- :func:`journal_index`: the consumer, listing records to drain.

Every kernel takes the ring's capacity from the caller's private copy and walks at most
``ring_max_records(capacity)`` records, whatever the shared positions say.

Record payload (after the ring's 16-byte record header)::

    +0   DATA_EXPIRY   wall ns, 0 = never (int64)
    +8   KEY_LEN (u32) | VALUE_LEN (u32)
    +16  key bytes | value bytes (tag first) | embedding bytes (kind PUT_EMB: the rest)
"""

from nt_memory.kernels._jit import jit
from nt_memory.kernels.arena import write_bytes
from nt_memory.kernels.atomics import address_to_bytes, address_to_words, load_acquire, store_release
from nt_memory.kernels.layout.journal import (
    JOURNAL_DELETE,
    JOURNAL_EXPIRY_OFFSET,
    JOURNAL_KEY_OFFSET,
    JOURNAL_LENS_OFFSET,
    JOURNAL_PAYLOAD_FIXED,
    JOURNAL_PUT,
    JOURNAL_PUT_EMB,
)
from nt_memory.kernels.layout.ring import KIND_CORRUPT, RECORD_HDR_BYTES, RING_HDR_WORDS, RING_HEAD_IDX, RING_TAIL_IDX
from nt_memory.kernels.ring import ring_commit, ring_lock, ring_max_records, ring_record_at, ring_reserve, ring_unlock
from nt_memory.kernels.status import BUSY, CORRUPT, FULL, JOURNAL_FULL, NOT_FOUND, OK


@jit
def journal_is_kv(kind):
    return kind == JOURNAL_PUT or kind == JOURNAL_DELETE or kind == JOURNAL_PUT_EMB


@jit(inline="always")  # as a call (seven arrays passed): 59 more instructions per put under callgrind
def journal_append(jhdr, jw, jb, cap, owner, kind, key, value, data_expiry, emb, jpos_words, jpos_idx):
    """Append a record (caller holds the key's stripe). Stores ``position + 1`` into
    ``jpos_words[jpos_idx]`` once the position is reserved and before the record is published.
    OK, JOURNAL_FULL, BUSY (append lock held past the spin budget), VALUE_TOO_LARGE or CORRUPT;
    nothing is visible unless it returns OK."""
    klen = len(key)
    vlen = len(value)
    n = JOURNAL_PAYLOAD_FIXED + klen + vlen + len(emb)
    if not ring_lock(jhdr, owner):
        return BUSY
    pos = ring_reserve(jhdr, jw, cap, n, kind, True)
    if pos < 0:
        ring_unlock(jhdr)
        return JOURNAL_FULL if pos == FULL else pos
    # Release: recovery reads it after taking the dead writer's stripe, and must see it whenever
    # the record below may have been published.
    store_release(jpos_words, jpos_idx, pos + 1)
    off = (pos % cap) + RECORD_HDR_BYTES
    jw[(off + JOURNAL_EXPIRY_OFFSET) >> 3] = data_expiry
    jw[(off + JOURNAL_LENS_OFFSET) >> 3] = klen | (vlen << 32)
    dst = write_bytes(jb, off + JOURNAL_KEY_OFFSET, key)
    dst = write_bytes(jb, dst, value)
    if len(emb) > 0:  # most records carry none: no memcpy call for nothing
        write_bytes(jb, dst, emb)
    ring_commit(jhdr, jw, cap, pos, n)
    ring_unlock(jhdr)
    return OK


@jit
def journal_published(jhdr, jpos, dead_held_lock):
    """Did the append that reserved ``jpos`` (position + 1, 0 = none) publish its record? For the
    recovery of a dead writer's stripe, which holds the append lock meanwhile (so nobody has
    appended since it took it over): if the dead writer held the lock, the record is published iff
    TAIL passed it; if it did not, its append ran to the end (the lock is released only after the
    commit)."""
    if jpos <= 0:
        return False
    if not dead_held_lock:
        return True
    return load_acquire(jhdr, RING_TAIL_IDX) > jpos - 1


@jit
def _lens(jw, off):
    lens = jw[(off + JOURNAL_LENS_OFFSET) >> 3]
    return lens & 0xFFFFFFFF, (lens >> 32) & 0xFFFFFFFF


@jit
def journal_find(jhdr, jw, jb, cap, key):
    """The newest record for ``key`` in the journal's unconsumed part: ``pos << 1 | is_delete``,
    NOT_FOUND, or CORRUPT (positions no ring could hold). Any process, no lock. The caller copies
    the record's value out of the mapping and then checks that HEAD has not passed ``pos``: before
    HEAD, appenders cannot overwrite a record; past it, the record is in L3 already."""
    klen = len(key)
    pos = load_acquire(jhdr, RING_HEAD_IDX)
    tail = load_acquire(jhdr, RING_TAIL_IDX)
    if pos < 0 or tail < pos or tail - pos > cap:
        return CORRUPT
    found = NOT_FOUND
    for _ in range(ring_max_records(cap)):
        if pos >= tail:
            break
        nxt, off, n, kind = ring_record_at(jw, cap, pos)
        if kind == KIND_CORRUPT:
            return CORRUPT
        if journal_is_kv(kind):
            rk, rv = _lens(jw, off)
            if rk == klen and JOURNAL_PAYLOAD_FIXED + rk + rv <= n:
                start = off + JOURNAL_KEY_OFFSET
                same = True
                for j in range(klen):
                    if jb[start + j] != key[j]:
                        same = False
                        break
                if same:
                    found = (pos << 1) | (1 if kind == JOURNAL_DELETE else 0)
        pos = nxt
    return found


@jit
def journal_index(jhdr, jw, cap, pos, tail, out):
    """List the records in [pos, tail) into ``out`` (rows: position, payload offset, payload
    length, kind) for the consumer; returns (rows filled, position after the last listed), or
    (CORRUPT, pos) when the positions or a record's length are impossible."""
    if pos < 0 or tail < pos or tail - pos > cap:
        return CORRUPT, pos
    rows = 0
    while pos < tail and rows < out.shape[0]:
        nxt, off, n, kind = ring_record_at(jw, cap, pos)
        if kind == KIND_CORRUPT or nxt > tail:
            return CORRUPT, pos
        out[rows, 0] = pos
        out[rows, 1] = off
        out[rows, 2] = n
        out[rows, 3] = kind
        rows += 1
        pos = nxt
    return rows, pos


@jit
def journal_payload(jw, off):
    """(data expiry, key length, value length) of the record whose payload starts at ``off``."""
    klen, vlen = _lens(jw, off)
    return jw[(off + JOURNAL_EXPIRY_OFFSET) >> 3], klen, vlen


@jit
def journal_find_at(ring_addr, data_addr, cap, key):
    """:func:`journal_find` over the ring header and data at these addresses: Python's entry (any
    process, no lock; an L3 read asks whether the journal holds a newer record of ``key``)."""
    jhdr = address_to_words(ring_addr, RING_HDR_WORDS)
    jw = address_to_words(data_addr, cap >> 3)
    jb = address_to_bytes(data_addr, cap)
    return journal_find(jhdr, jw, jb, cap, key)


@jit
def journal_index_at(ring_addr, data_addr, cap, pos, tail, out):
    """:func:`journal_index` over the ring header and data at these addresses: the consumer's
    (the flusher's) entry."""
    jhdr = address_to_words(ring_addr, RING_HDR_WORDS)
    jw = address_to_words(data_addr, cap >> 3)
    return journal_index(jhdr, jw, cap, pos, tail, out)
