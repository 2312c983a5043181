"""The L1 hash table: open addressing with linear probing, in shared memory, lock-free readers.

Keys are ``namespace \\0 key`` bytes, hashed by the caller (xxh3-64, remapped above the reserved
values); the full key bytes live in the arena block beside the value and are compared on every
hit, so a 64-bit collision never returns another key's value.

Who may call what:

- readers (:func:`table_get`): any number, any process, no lock, no store except hit/miss counters
  in their own member slot and the CLOCK access byte. A reader never returns a torn value: every
  slot is a seqlock record, and a value is copied between the sequence reads.
- writers (:func:`table_put`, :func:`table_delete`): exclusive per *stripe* of hashes through a
  lock word set by one CAS to the writer's owner word (member slot + epoch), so an owner that dies
  is recognisable. Before touching a slot a writer records a redo *intent* in its stripe; whoever
  takes a stripe from a dead owner replays it (:func:`table_recover`).
- :func:`table_rehash` holds every stripe, makes the table sequence odd (readers that miss retry)
  and compacts tombstones in place, one logged move at a time, so it can be resumed after a crash.

Context (``ctx``, a private int64 array per handle; addresses are those of *this* process)::

    0 OPEN  1 TABLE (header addr)  2 STRIPES  3 SLOTS  4 ACCESS  5 NSLOTS  6 ARENA (header addr)
    7 ARENA_DATA  8 ARENA_BYTES  9 OUT (scratch addr)  10 OUT_BYTES  11 OWNER  12 MEMBER (stats addr)
    13 NSTRIPES  14 JOURNAL (ring header addr, 0 = none)  15 JOURNAL_DATA  16 JOURNAL_BYTES

Slot (4 words)::      HASH | SEQ | REF (arena reference) | EXPIRY (wall ns, 0 = never)
Stripe (16 words)::   LOCK | PHASE | SLOT | KEY_HASH | NEW_HASH | NEW_REF | OLD_REF | EXPIRY | VERSION
                      (VERSION counts the stripe's writes: a promotion from a lower tier is only
                      applied if no write came in between)

Journaled writes (flag J_JOURNAL) append their record to the write-behind journal *inside* the
stripe's critical section, so the journal (hence L3) and L1 see the writes to a key in one order.

Table header (int64 words, one 64-byte line per group of words written together)::

    line 0  NSLOTS MAX_ENTRIES MAX_KEY MAX_VALUE NSTRIPES TRACK_ACCESS HASH_MASK DEFAULT_TTL_NS
    line 1  TABLE_SEQ                                    odd while a rehash runs
    line 2  COUNT TOMBS                                  live entries, tombstones
    line 3  CLOCK_HAND
    line 4  EVICTIONS EXPIRATIONS REHASHES REPAIRS INSERTS UPDATES DELETES
    line 5  REHASH_ACTIVE REHASH_OWNER REHASH_P0 REHASH_POS MOVE_SRC MOVE_DST   (rehash intent)
            RETIRED_HITS RETIRED_MISSES
"""

import numpy as np

from nt_memory.kernels._jit import jit
from nt_memory.kernels.arena import (
    ARENA_DATA_BYTES_IDX,
    ARENA_HDR_WORDS,
    BLOCK_HDR_BYTES,
    arena_alloc,
    arena_block_ok,
    arena_free,
    ref_gen,
    ref_offset,
    write_bytes,
)
from nt_memory.kernels.atomics import (
    address_to_bytes,
    address_to_words,
    cas,
    clock_ns,
    coarse_clock_ns,
    cpu_relax,
    fetch_add,
    load_acquire,
    load_relaxed,
    store_release,
)
from nt_memory.kernels.lockword import lockword_acquire, lockword_release, lockword_steal, lockword_try_acquire
from nt_memory.kernels.ring import (
    RING_HDR_WORDS,
    RING_HEAD_IDX,
    RING_TAIL_IDX,
    ring_commit,
    ring_lock,
    ring_record_at,
    ring_reserve,
    ring_unlock,
)
from nt_memory.kernels.seqlock import seq_read_begin, seq_read_valid, seq_write_begin, seq_write_end
from nt_memory.kernels.status import (
    BUSY,
    CLOSED,
    CORRUPT,
    EXPIRED,
    FULL,
    JOURNAL_FULL,
    KEY_TOO_LARGE,
    NEEDS_REHASH,
    NOT_FOUND,
    OK,
    OUT_TOO_SMALL,
    STALE,
    VALUE_TOO_LARGE,
)

CTX_OPEN_IDX = 0
CTX_TABLE_IDX = 1
CTX_STRIPES_IDX = 2
CTX_SLOTS_IDX = 3
CTX_ACCESS_IDX = 4
CTX_NSLOTS_IDX = 5
CTX_ARENA_IDX = 6
CTX_ARENA_DATA_IDX = 7
CTX_ARENA_BYTES_IDX = 8
CTX_OUT_IDX = 9
CTX_OUT_BYTES_IDX = 10
CTX_OWNER_IDX = 11
CTX_MEMBER_IDX = 12
CTX_NSTRIPES_IDX = 13
CTX_JOURNAL_IDX = 14  # journal ring header address, 0 = no journal (a bare L1 table)
CTX_JOURNAL_DATA_IDX = 15
CTX_JOURNAL_BYTES_IDX = 16
CTX_WORDS = 24

SLOT_HASH_IDX = 0
SLOT_SEQ_IDX = 1
SLOT_REF_IDX = 2
SLOT_EXPIRY_IDX = 3
SLOT_WORDS = 4
SLOT_BYTES = SLOT_WORDS * 8

STRIPE_LOCK_IDX = 0
STRIPE_PHASE_IDX = 1
STRIPE_SLOT_IDX = 2
STRIPE_KEY_HASH_IDX = 3
STRIPE_NEW_HASH_IDX = 4
STRIPE_NEW_REF_IDX = 5
STRIPE_OLD_REF_IDX = 6
STRIPE_EXPIRY_IDX = 7
STRIPE_VERSION_IDX = 8
STRIPE_WORDS = 16  # two 64-byte lines per stripe: writers of different stripes never share a line
STRIPE_BYTES = STRIPE_WORDS * 8

PHASE_IDLE = 0
PHASE_PREPARED = 1  # NEW_REF allocated (and SLOT maybe claimed): undo = free it, unclaim the slot
PHASE_COMMITTED = 2  # every new field recorded: redo = write them into SLOT, free OLD_REF

HDR_NSLOTS_IDX = 0
HDR_MAX_ENTRIES_IDX = 1
HDR_MAX_KEY_IDX = 2
HDR_MAX_VALUE_IDX = 3
HDR_NSTRIPES_IDX = 4
HDR_TRACK_ACCESS_IDX = 5
HDR_HASH_MASK_IDX = 6
HDR_DEFAULT_TTL_IDX = 7
HDR_TABLE_SEQ_IDX = 8
HDR_COUNT_IDX = 16
HDR_TOMBS_IDX = 17
HDR_CLOCK_HAND_IDX = 24
HDR_EVICTIONS_IDX = 32
HDR_EXPIRATIONS_IDX = 33
HDR_REHASHES_IDX = 34
HDR_REPAIRS_IDX = 35
HDR_INSERTS_IDX = 36
HDR_UPDATES_IDX = 37
HDR_DELETES_IDX = 38
HDR_REHASH_ACTIVE_IDX = 40
HDR_REHASH_OWNER_IDX = 41
HDR_REHASH_P0_IDX = 42
HDR_REHASH_POS_IDX = 43
HDR_MOVE_SRC_IDX = 44
HDR_MOVE_DST_IDX = 45
HDR_RETIRED_HITS_IDX = 46  # hits and misses of members that have left (their slots are reused)
HDR_RETIRED_MISSES_IDX = 47
TABLE_HDR_WORDS = 64
TABLE_HDR_BYTES = TABLE_HDR_WORDS * 8

# Member-slot statistics words a reader bumps (its own slot: plain increments, no contention).
MEMBER_HITS_IDX = 0
MEMBER_MISSES_IDX = 1
MEMBER_STATS_WORDS = 2

EMPTY = 0
TOMB = 1
BUSY_BASE = 2  # BUSY_BASE + stripe: a slot being claimed by that stripe's writer
RESERVED_HASHES = 256  # hashes below this are markers; callers add it to a real hash that falls below

SPINS = 1 << 14  # spin budget before a reader reports BUSY (about a millisecond), as for lock words
# The coarse clock lags the precise one by at most a tick (4 ms at HZ=250, 10 ms at HZ=100); an
# expiry further away than this from the coarse time cannot have passed.
COARSE_SLACK_NS = 20_000_000
# Rehash when live + tombstones would pass this fraction of the slots (numerator over 4).
REHASH_AT_QUARTERS = 3

# table_put / table_delete flags
J_JOURNAL = 1  # append the write to the journal (inside the stripe lock)
J_NO_L1 = 2  # do not keep the value in L1 (too large): remove any L1 entry for the key instead
J_PROMOTE = 4  # fill from a lower tier: only if the stripe's VERSION still equals ``version``
J_HELD = 8  # the caller already holds the stripe (table_lock_stripe)

JOURNAL_PUT = 1
JOURNAL_DELETE = 2
JOURNAL_PUT_EMB = 3  # a put whose record also carries the key's embedding, after the value
JOURNAL_PAYLOAD_FIXED = 16  # data expiry (8) | key length (4) | value length (4)


@jit
def _stripe_of(h, nstripes):
    return (h >> 32) & (nstripes - 1)


@jit
def _key_matches(data_b, off, vlen, klen, key):
    start = off + BLOCK_HDR_BYTES + vlen
    for j in range(klen):
        if data_b[start + j] != key[j]:
            return False
    return True


@jit
def _copy_value(data_w, data_b, src, n, out):
    """Copy ``n`` bytes from the arena at ``src`` (16-byte aligned: a block payload) into ``out``.

    Whole words when ``out`` is 8-byte aligned with room for the rounded-up length: the block is
    padded to its class size, so reading up to the next word boundary stays inside it."""
    words = (n + 7) >> 3
    if (out.ctypes.data & 7) == 0 and len(out) >= words * 8:
        out_w = out[: words * 8].view(np.int64)
        base = src >> 3
        for j in range(words):
            out_w[j] = data_w[base + j]
    else:
        for j in range(n):
            out[j] = data_b[src + j]


@jit
def _expired(expiry):
    if expiry == 0:
        return False
    if coarse_clock_ns() + COARSE_SLACK_NS < expiry:
        return False
    return clock_ns() >= expiry


@jit
def table_views(ctx_addr):
    """The views of one handle's segments, rebuilt from the integer addresses in its context."""
    ctx = address_to_words(ctx_addr, CTX_WORDS)
    hdr = address_to_words(ctx[CTX_TABLE_IDX], TABLE_HDR_WORDS)
    nslots = ctx[CTX_NSLOTS_IDX]
    stripes = address_to_words(ctx[CTX_STRIPES_IDX], ctx[CTX_NSTRIPES_IDX] * STRIPE_WORDS)
    slots = address_to_words(ctx[CTX_SLOTS_IDX], nslots * SLOT_WORDS)
    access = address_to_bytes(ctx[CTX_ACCESS_IDX], nslots)
    ahdr = address_to_words(ctx[CTX_ARENA_IDX], ARENA_HDR_WORDS)
    abytes = ctx[CTX_ARENA_BYTES_IDX]
    data_w = address_to_words(ctx[CTX_ARENA_DATA_IDX], abytes >> 3)
    data_b = address_to_bytes(ctx[CTX_ARENA_DATA_IDX], abytes)
    return ctx, hdr, stripes, slots, access, ahdr, data_w, data_b


# ----------------------------------------------------------------------------------------- readers


@jit
def _read_slot(slots, base, h, ahdr, data_w, data_b, key, out, copy):
    """Read the slot at word ``base`` if it holds ``key``: >= 0 value length (copied into ``out``
    when ``copy``) packed as ``len << 8 | tag``; NOT_FOUND if it holds another key; EXPIRED; BUSY if
    the seqlock stayed odd or changing past the spin budget; OUT_TOO_SMALL."""
    seq_idx = base + SLOT_SEQ_IDX
    data_bytes = ahdr[ARENA_DATA_BYTES_IDX]
    klen = len(key)
    for _ in range(SPINS):
        s1 = seq_read_begin(slots, seq_idx)
        if s1 & 1:
            cpu_relax()
            continue
        if load_relaxed(slots, base + SLOT_HASH_IDX) != h:
            return NOT_FOUND  # deleted or reused since the probe saw it
        ref = slots[base + SLOT_REF_IDX]
        expiry = slots[base + SLOT_EXPIRY_IDX]
        off = ref_offset(ref)
        matched = False
        result = 0
        if arena_block_ok(ahdr, ref):
            w0 = data_w[off >> 3]
            w1 = data_w[(off >> 3) + 1]
            vlen = w1 >> 32
            blen = w1 & 0xFFFFFFFF
            if (w0 & 0xFFFFFF) == ref_gen(ref) and off + BLOCK_HDR_BYTES + vlen + blen <= data_bytes:
                if blen == klen and _key_matches(data_b, off, vlen, klen, key):
                    matched = True
                    tag = data_b[off + BLOCK_HDR_BYTES] if vlen > 0 else 0
                    result = (vlen << 8) | tag
                    if copy:
                        if vlen > len(out):
                            result = OUT_TOO_SMALL
                        else:
                            _copy_value(data_w, data_b, off + BLOCK_HDR_BYTES, vlen, out)
        if not seq_read_valid(slots, seq_idx, s1):
            continue  # torn: a writer moved in meanwhile, whatever we saw is discarded
        if not matched:
            if not arena_block_ok(ahdr, ref):
                return CORRUPT
            return NOT_FOUND
        if _expired(expiry):
            return EXPIRED
        return result
    return BUSY


@jit
def table_lookup(ctx_addr, h, key, out, copy):
    """Look ``key`` (hash ``h``, already fixed) up. Any process, no lock.

    Returns ``len << 8 | tag`` (the value copied into ``out`` when ``copy``), or NOT_FOUND, EXPIRED,
    KEY_TOO_LARGE, BUSY (a writer or rehash held on past the spin budget: maybe dead, see
    :func:`table_recover`), CLOSED, CORRUPT or OUT_TOO_SMALL.
    """
    ctx, hdr, stripes, slots, access, ahdr, data_w, data_b = table_views(ctx_addr)
    if ctx[CTX_OPEN_IDX] != 1:
        return CLOSED
    if len(key) > hdr[HDR_MAX_KEY_IDX]:
        return KEY_TOO_LARGE
    member = address_to_words(ctx[CTX_MEMBER_IDX], MEMBER_STATS_WORDS)
    mask = ctx[CTX_NSLOTS_IDX] - 1
    for _ in range(SPINS):
        ts = load_acquire(hdr, HDR_TABLE_SEQ_IDX)
        i = h & mask
        for _probe in range(mask + 1):
            base = i * SLOT_WORDS
            hh = load_acquire(slots, base + SLOT_HASH_IDX)
            if hh == EMPTY:
                break
            if hh == h:
                r = _read_slot(slots, base, h, ahdr, data_w, data_b, key, out, copy)
                if r >= 0:
                    member[MEMBER_HITS_IDX] += 1
                    if hdr[HDR_TRACK_ACCESS_IDX] != 0 and access[i] == 0:
                        access[i] = 1
                    return r
                if r != NOT_FOUND:
                    if r == EXPIRED:
                        member[MEMBER_MISSES_IDX] += 1
                    return r
            i = (i + 1) & mask
        # A miss is only trusted if no rehash ran meanwhile: a rehash moves entries and may have
        # moved ours behind the probe.
        if (ts & 1) == 0 and load_acquire(hdr, HDR_TABLE_SEQ_IDX) == ts:
            member[MEMBER_MISSES_IDX] += 1
            return NOT_FOUND
        cpu_relax()
    return BUSY


@jit
def table_get(ctx_addr, h, key):
    """The Python fast path: :func:`table_lookup` into the handle's scratch buffer."""
    ctx = address_to_words(ctx_addr, CTX_WORDS)
    out = address_to_bytes(ctx[CTX_OUT_IDX], ctx[CTX_OUT_BYTES_IDX])
    return table_lookup(ctx_addr, h, key, out, True)


@jit
def table_contains(ctx_addr, h, key):
    """Like :func:`table_get` without copying the value."""
    ctx = address_to_words(ctx_addr, CTX_WORDS)
    out = address_to_bytes(ctx[CTX_OUT_IDX], 0)
    return table_lookup(ctx_addr, h, key, out, False)


# ----------------------------------------------------------------------------------------- writers


@jit
def _try_lock(stripes, stripe, owner):
    return lockword_try_acquire(stripes, stripe * STRIPE_WORDS + STRIPE_LOCK_IDX, owner)


@jit
def _lock(stripes, stripe, owner):
    return lockword_acquire(stripes, stripe * STRIPE_WORDS + STRIPE_LOCK_IDX, owner)


@jit
def _unlock(stripes, stripe):
    lockword_release(stripes, stripe * STRIPE_WORDS + STRIPE_LOCK_IDX)


@jit
def _write_slot(slots, base, new_hash, ref, expiry):
    """Write a slot under its seqlock (caller holds the stripe that owns it)."""
    odd = seq_write_begin(slots, base + SLOT_SEQ_IDX)
    slots[base + SLOT_REF_IDX] = ref
    slots[base + SLOT_EXPIRY_IDX] = expiry
    store_release(slots, base + SLOT_HASH_IDX, new_hash)
    seq_write_end(slots, base + SLOT_SEQ_IDX, odd)


@jit
def _find(slots, mask, h, key, ahdr, data_w, data_b):
    """Probe for ``key`` as its stripe's lock holder: (slot of the key or -1, first free slot or -1,
    that free slot was a tombstone). Entries of our stripe cannot change under us, so no seqlock."""
    data_bytes = ahdr[ARENA_DATA_BYTES_IDX]
    klen = len(key)
    i = h & mask
    free = -1
    free_tomb = False
    for _ in range(mask + 1):
        base = i * SLOT_WORDS
        hh = load_acquire(slots, base + SLOT_HASH_IDX)
        if hh == EMPTY:
            if free < 0:
                free = i
            return -1, free, free_tomb
        if hh == TOMB:
            if free < 0:
                free = i
                free_tomb = True
        elif hh == h:
            ref = slots[base + SLOT_REF_IDX]
            if arena_block_ok(ahdr, ref):
                off = ref_offset(ref)
                w1 = data_w[(off >> 3) + 1]
                vlen = w1 >> 32
                blen = w1 & 0xFFFFFFFF
                if (
                    blen == klen
                    and off + BLOCK_HDR_BYTES + vlen + blen <= data_bytes
                    and _key_matches(data_b, off, vlen, klen, key)
                ):
                    return i, free, free_tomb
        i = (i + 1) & mask
    return -1, free, free_tomb


@jit
def _remove_locked(hdr, stripes, stripe, slots, i, key_hash, ahdr, data_w, expired, evicted):
    """Tombstone slot ``i`` (key hash ``key_hash``) under ``stripe``, which the caller holds."""
    base = i * SLOT_WORDS
    sb = stripe * STRIPE_WORDS
    old_ref = slots[base + SLOT_REF_IDX]
    stripes[sb + STRIPE_SLOT_IDX] = i
    stripes[sb + STRIPE_KEY_HASH_IDX] = key_hash
    stripes[sb + STRIPE_NEW_HASH_IDX] = TOMB
    stripes[sb + STRIPE_NEW_REF_IDX] = 0
    stripes[sb + STRIPE_OLD_REF_IDX] = old_ref
    stripes[sb + STRIPE_EXPIRY_IDX] = 0
    store_release(stripes, sb + STRIPE_PHASE_IDX, PHASE_COMMITTED)
    _write_slot(slots, base, TOMB, 0, 0)
    fetch_add(hdr, HDR_COUNT_IDX, -1)
    fetch_add(hdr, HDR_TOMBS_IDX, 1)
    if expired:
        fetch_add(hdr, HDR_EXPIRATIONS_IDX, 1)
    elif evicted:
        fetch_add(hdr, HDR_EVICTIONS_IDX, 1)
    arena_free(ahdr, data_w, old_ref)
    store_release(stripes, sb + STRIPE_PHASE_IDX, PHASE_IDLE)


@jit
def _evict_one(hdr, stripes, slots, access, mask, own_stripe, owner, ahdr, data_w):
    """CLOCK: advance the shared hand past recently used entries (clearing their bit) and remove the
    first entry not used since the hand last passed, or an expired one. Caller holds ``own_stripe``;
    other stripes are only tried, never waited for (no deadlock). Returns OK or FULL."""
    nstripes = hdr[HDR_NSTRIPES_IDX]
    track = hdr[HDR_TRACK_ACCESS_IDX] != 0
    for _ in range(2 * (mask + 1) + 64):
        i = fetch_add(hdr, HDR_CLOCK_HAND_IDX, 1) & mask
        base = i * SLOT_WORDS
        hh = load_acquire(slots, base + SLOT_HASH_IDX)
        if hh < RESERVED_HASHES:
            continue
        expired = _expired(slots[base + SLOT_EXPIRY_IDX])
        if track and access[i] != 0 and not expired:
            access[i] = 0
            continue
        st = _stripe_of(hh, nstripes)
        if st != own_stripe and not _try_lock(stripes, st, owner):
            continue
        if load_acquire(slots, base + SLOT_HASH_IDX) == hh:
            _remove_locked(hdr, stripes, st, slots, i, hh, ahdr, data_w, expired, True)
            access[i] = 0
            if st != own_stripe:
                _unlock(stripes, st)
            return OK
        if st != own_stripe:
            _unlock(stripes, st)
    return FULL


@jit
def _journal_append(ctx, kind, key, value, data_expiry, emb):
    """Append a journal record (caller holds the key's stripe): fixed part, key, value, then the
    embedding bytes (kind PUT_EMB). OK, JOURNAL_FULL, BUSY or VALUE_TOO_LARGE; nothing is visible
    unless it returns OK."""
    jhdr = address_to_words(ctx[CTX_JOURNAL_IDX], RING_HDR_WORDS)
    jbytes = ctx[CTX_JOURNAL_BYTES_IDX]
    jw = address_to_words(ctx[CTX_JOURNAL_DATA_IDX], jbytes >> 3)
    jb = address_to_bytes(ctx[CTX_JOURNAL_DATA_IDX], jbytes)
    klen = len(key)
    vlen = len(value)
    elen = len(emb)
    n = JOURNAL_PAYLOAD_FIXED + klen + vlen + elen
    if not ring_lock(jhdr, ctx[CTX_OWNER_IDX]):
        return BUSY
    pos = ring_reserve(jhdr, jw, n, kind, True)
    if pos < 0:
        ring_unlock(jhdr)
        return JOURNAL_FULL if pos == FULL else pos
    off = (pos % jbytes) + 16
    jw[off >> 3] = data_expiry
    jw[(off >> 3) + 1] = klen | (vlen << 32)
    dst = write_bytes(jb, off + JOURNAL_PAYLOAD_FIXED, key)
    dst = write_bytes(jb, dst, value)
    write_bytes(jb, dst, emb)
    ring_commit(jhdr, jw, pos, n)
    ring_unlock(jhdr)
    return OK


@jit
def table_put(ctx_addr, h, key, value, expiry, data_expiry, flags, version, emb):
    """Insert or replace ``key`` -> ``value`` (encoded bytes, tag first). ``expiry`` bounds the stay
    in L1 and ``data_expiry`` the data's life (journal record); wall ns, 0 = never. ``flags``: J_*.
    ``emb``: the key's embedding as float32 bytes, journaled with the value (empty: none).
    Many writers; exclusive per stripe.

    Returns OK, KEY_TOO_LARGE / VALUE_TOO_LARGE (nothing stored), FULL (no room even after
    eviction), NEEDS_REHASH (nothing stored: rehash, then retry), JOURNAL_FULL (nothing stored: let
    the flusher catch up), STALE (J_PROMOTE and the stripe was written meanwhile: nothing stored),
    BUSY (the stripe stayed locked: check its owner, maybe recover), CLOSED or CORRUPT.
    """
    ctx, hdr, stripes, slots, access, ahdr, data_w, data_b = table_views(ctx_addr)
    if ctx[CTX_OPEN_IDX] != 1:
        return CLOSED
    klen = len(key)
    vlen = len(value)
    if klen > hdr[HDR_MAX_KEY_IDX]:
        return KEY_TOO_LARGE
    if vlen > hdr[HDR_MAX_VALUE_IDX] and (flags & J_NO_L1) == 0:
        return VALUE_TOO_LARGE
    owner = ctx[CTX_OWNER_IDX]
    nstripes = hdr[HDR_NSTRIPES_IDX]
    mask = ctx[CTX_NSLOTS_IDX] - 1
    stripe = _stripe_of(h, nstripes)
    sb = stripe * STRIPE_WORDS
    held = (flags & J_HELD) != 0
    if not held and not _lock(stripes, stripe, owner):
        return BUSY
    if (flags & J_PROMOTE) != 0 and stripes[sb + STRIPE_VERSION_IDX] != version:
        if not held:
            _unlock(stripes, stripe)
        return STALE
    found, free, free_tomb = _find(slots, mask, h, key, ahdr, data_w, data_b)
    if (flags & J_NO_L1) != 0:
        # A value too large for L1: journal it, and drop what L1 held for the key.
        status = OK
        if (flags & J_JOURNAL) != 0:
            status = _journal_append(ctx, JOURNAL_PUT_EMB if len(emb) else JOURNAL_PUT, key, value, data_expiry, emb)
        if status == OK:
            stripes[sb + STRIPE_VERSION_IDX] += 1
            if found >= 0:
                _remove_locked(hdr, stripes, stripe, slots, found, h, ahdr, data_w, False, False)
                access[found] = 0
        if not held:
            _unlock(stripes, stripe)
        return status
    if found < 0:
        if hdr[HDR_COUNT_IDX] >= hdr[HDR_MAX_ENTRIES_IDX]:
            if _evict_one(hdr, stripes, slots, access, mask, stripe, owner, ahdr, data_w) != OK:
                if not held:
                    _unlock(stripes, stripe)
                return FULL
            found, free, free_tomb = _find(slots, mask, h, key, ahdr, data_w, data_b)
        if not free_tomb and (hdr[HDR_COUNT_IDX] + hdr[HDR_TOMBS_IDX] + 1) * 4 > (mask + 1) * REHASH_AT_QUARTERS:
            if not held:
                _unlock(stripes, stripe)
            return NEEDS_REHASH
    ref = arena_alloc(ahdr, data_w, vlen + klen)
    attempts = 0
    while ref == FULL and attempts < 64:
        # The arena is full: evicting frees blocks (of some class); try again.
        if _evict_one(hdr, stripes, slots, access, mask, stripe, owner, ahdr, data_w) != OK:
            break
        attempts += 1
        ref = arena_alloc(ahdr, data_w, vlen + klen)
    if ref < 0:
        if not held:
            _unlock(stripes, stripe)
        return ref
    if (flags & J_JOURNAL) != 0:
        status = _journal_append(ctx, JOURNAL_PUT_EMB if len(emb) else JOURNAL_PUT, key, value, data_expiry, emb)
        if status != OK:
            arena_free(ahdr, data_w, ref)
            if not held:
                _unlock(stripes, stripe)
            return status
    if attempts > 0:
        # Eviction may have removed entries, our own key's among them: find our place again.
        found, free, free_tomb = _find(slots, mask, h, key, ahdr, data_w, data_b)
    stripes[sb + STRIPE_NEW_REF_IDX] = ref
    stripes[sb + STRIPE_SLOT_IDX] = -1
    store_release(stripes, sb + STRIPE_PHASE_IDX, PHASE_PREPARED)
    off = ref_offset(ref)
    data_w[(off >> 3) + 1] = klen | (vlen << 32)
    write_bytes(data_b, write_bytes(data_b, off + BLOCK_HDR_BYTES, value), key)
    if found >= 0:
        base = found * SLOT_WORDS
        stripes[sb + STRIPE_OLD_REF_IDX] = slots[base + SLOT_REF_IDX]
        slot = found
    else:
        # Claim a free slot against writers of other stripes; on a lost race probe on from there
        # (our key cannot be further on: only our stripe inserts it).
        claim = BUSY_BASE + stripe
        slot = -1
        i = free if free >= 0 else h & mask
        for _ in range(mask + 1):
            hh = load_acquire(slots, i * SLOT_WORDS + SLOT_HASH_IDX)
            if hh == EMPTY or hh == TOMB:
                stripes[sb + STRIPE_SLOT_IDX] = i
                if cas(slots, i * SLOT_WORDS + SLOT_HASH_IDX, hh, claim) == hh:
                    slot = i
                    if hh == TOMB:
                        fetch_add(hdr, HDR_TOMBS_IDX, -1)
                    break
            i = (i + 1) & mask
        if slot < 0:
            # Cannot happen below the rehash threshold; the journal record (if any) stands and
            # L1 simply does not cache this write.
            arena_free(ahdr, data_w, ref)
            store_release(stripes, sb + STRIPE_PHASE_IDX, PHASE_IDLE)
            if (flags & J_PROMOTE) == 0:
                stripes[sb + STRIPE_VERSION_IDX] += 1
            if not held:
                _unlock(stripes, stripe)
            return OK if (flags & J_JOURNAL) != 0 else NEEDS_REHASH
        stripes[sb + STRIPE_OLD_REF_IDX] = 0
        base = slot * SLOT_WORDS
    stripes[sb + STRIPE_SLOT_IDX] = slot
    stripes[sb + STRIPE_KEY_HASH_IDX] = h
    stripes[sb + STRIPE_NEW_HASH_IDX] = h
    stripes[sb + STRIPE_EXPIRY_IDX] = expiry
    store_release(stripes, sb + STRIPE_PHASE_IDX, PHASE_COMMITTED)
    _write_slot(slots, base, h, ref, expiry)
    # A new entry starts unreferenced (it must be read to earn a second chance), so a burst of
    # one-off inserts evicts itself before it evicts the working set; an update counts as a use.
    access[slot] = 1 if found >= 0 else 0
    if found >= 0:
        fetch_add(hdr, HDR_UPDATES_IDX, 1)
        arena_free(ahdr, data_w, stripes[sb + STRIPE_OLD_REF_IDX])
    else:
        fetch_add(hdr, HDR_COUNT_IDX, 1)
        fetch_add(hdr, HDR_INSERTS_IDX, 1)
    if (flags & J_PROMOTE) == 0:
        stripes[sb + STRIPE_VERSION_IDX] += 1
    store_release(stripes, sb + STRIPE_PHASE_IDX, PHASE_IDLE)
    if not held:
        _unlock(stripes, stripe)
    return OK


@jit
def table_delete(ctx_addr, h, key, flags):
    """Remove ``key`` (with J_JOURNAL: and journal the delete first). Returns OK, NOT_FOUND (not in
    L1; with J_JOURNAL the delete is journaled all the same), KEY_TOO_LARGE, JOURNAL_FULL (nothing
    done), BUSY, CLOSED."""
    ctx, hdr, stripes, slots, access, ahdr, data_w, data_b = table_views(ctx_addr)
    if ctx[CTX_OPEN_IDX] != 1:
        return CLOSED
    if len(key) > hdr[HDR_MAX_KEY_IDX]:
        return KEY_TOO_LARGE
    stripe = _stripe_of(h, hdr[HDR_NSTRIPES_IDX])
    held = (flags & J_HELD) != 0
    if not held and not _lock(stripes, stripe, ctx[CTX_OWNER_IDX]):
        return BUSY
    if (flags & J_JOURNAL) != 0:
        st = _journal_append(ctx, JOURNAL_DELETE, key, key[:0], 0, key[:0])
        if st != OK:
            if not held:
                _unlock(stripes, stripe)
            return st
    stripes[stripe * STRIPE_WORDS + STRIPE_VERSION_IDX] += 1
    found, _free, _tomb = _find(slots, ctx[CTX_NSLOTS_IDX] - 1, h, key, ahdr, data_w, data_b)
    status = NOT_FOUND
    if found >= 0:
        expired = _expired(slots[found * SLOT_WORDS + SLOT_EXPIRY_IDX])
        _remove_locked(hdr, stripes, stripe, slots, found, h, ahdr, data_w, expired, False)
        access[found] = 0
        if not expired:
            fetch_add(hdr, HDR_DELETES_IDX, 1)
        status = NOT_FOUND if expired else OK
    if not held:
        _unlock(stripes, stripe)
    return status


@jit
def table_lock_stripe(ctx_addr, h):
    """Take the stripe of hash ``h`` for a multi-step write driven from Python (a write-through to
    L3 that must stay ordered with the journal); then pass J_HELD. OK, BUSY or CLOSED."""
    ctx, hdr, stripes, slots, access, ahdr, data_w, data_b = table_views(ctx_addr)
    if ctx[CTX_OPEN_IDX] != 1:
        return CLOSED
    return OK if _lock(stripes, _stripe_of(h, hdr[HDR_NSTRIPES_IDX]), ctx[CTX_OWNER_IDX]) else BUSY


@jit
def table_unlock_stripe(ctx_addr, h):
    ctx, hdr, stripes, slots, access, ahdr, data_w, data_b = table_views(ctx_addr)
    stripe = _stripe_of(h, hdr[HDR_NSTRIPES_IDX])
    if stripes[stripe * STRIPE_WORDS + STRIPE_LOCK_IDX] == ctx[CTX_OWNER_IDX]:
        _unlock(stripes, stripe)
    return OK


@jit
def table_stripe_version(ctx_addr, h):
    """The write count of the stripe of ``h``: read it before reading a lower tier, pass it with
    J_PROMOTE to fill L1 only if nothing was written to the stripe meanwhile."""
    ctx, hdr, stripes, slots, access, ahdr, data_w, data_b = table_views(ctx_addr)
    stripe = _stripe_of(h, hdr[HDR_NSTRIPES_IDX])
    return load_acquire(stripes, stripe * STRIPE_WORDS + STRIPE_VERSION_IDX)


@jit
def journal_find(ctx_addr, key):
    """The newest record for ``key`` in the journal's unconsumed part: ``pos << 1 | is_delete``,
    or NOT_FOUND. Any process, no lock. The caller copies the record's value out of the mapping and
    then checks that HEAD has not passed ``pos`` (:func:`journal_head`): before HEAD, appenders
    cannot overwrite a record; past it, the record is in L3 already, where the caller looks next."""
    ctx = address_to_words(ctx_addr, CTX_WORDS)
    if ctx[CTX_OPEN_IDX] != 1:
        return CLOSED
    if ctx[CTX_JOURNAL_IDX] == 0:
        return NOT_FOUND
    jhdr = address_to_words(ctx[CTX_JOURNAL_IDX], RING_HDR_WORDS)
    jbytes = ctx[CTX_JOURNAL_BYTES_IDX]
    jw = address_to_words(ctx[CTX_JOURNAL_DATA_IDX], jbytes >> 3)
    jb = address_to_bytes(ctx[CTX_JOURNAL_DATA_IDX], jbytes)
    klen = len(key)
    pos = load_acquire(jhdr, RING_HEAD_IDX)
    tail = load_acquire(jhdr, RING_TAIL_IDX)
    found = NOT_FOUND
    while pos < tail:
        nxt, off, n, kind = ring_record_at(jhdr, jw, pos)
        if kind == JOURNAL_PUT or kind == JOURNAL_DELETE or kind == JOURNAL_PUT_EMB:
            lens = jw[(off >> 3) + 1]
            rk = lens & 0xFFFFFFFF
            rv = lens >> 32
            if rk == klen and JOURNAL_PAYLOAD_FIXED + rk + rv <= n and off + n <= jbytes:
                start = off + JOURNAL_PAYLOAD_FIXED
                same = True
                for j in range(klen):
                    if jb[start + j] != key[j]:
                        same = False
                        break
                if same:
                    found = (pos << 1) | (1 if kind == JOURNAL_DELETE else 0)
        if nxt <= pos:
            break
        pos = nxt
    return found


@jit
def journal_index(ring_addr, data_addr, nbytes, pos, tail, out):
    """List the records in [pos, tail) into ``out`` (rows: position, payload offset, payload
    length, kind) for the consumer; returns (rows filled, position after the last listed)."""
    jhdr = address_to_words(ring_addr, RING_HDR_WORDS)
    jw = address_to_words(data_addr, nbytes >> 3)
    rows = 0
    while pos < tail and rows < out.shape[0]:
        nxt, off, n, kind = ring_record_at(jhdr, jw, pos)
        out[rows, 0] = pos
        out[rows, 1] = off
        out[rows, 2] = n
        out[rows, 3] = kind
        rows += 1
        if nxt <= pos:
            break
        pos = nxt
    return rows, pos


# --------------------------------------------------------------------------- recovery and rehash


@jit
def _replay_intent(hdr, stripes, stripe, slots, ahdr, data_w):
    """Finish or undo what the dead holder of ``stripe`` was doing (caller now holds the stripe)."""
    sb = stripe * STRIPE_WORDS
    phase = load_acquire(stripes, sb + STRIPE_PHASE_IDX)
    nslots = len(slots) // SLOT_WORDS
    slot = stripes[sb + STRIPE_SLOT_IDX]
    if phase == PHASE_PREPARED:
        # Died before committing: the new block was never published. Unclaim a slot we claimed.
        if 0 <= slot < nslots:
            base = slot * SLOT_WORDS
            if cas(slots, base + SLOT_HASH_IDX, BUSY_BASE + stripe, TOMB) == BUSY_BASE + stripe:
                fetch_add(hdr, HDR_TOMBS_IDX, 1)
        new_ref = stripes[sb + STRIPE_NEW_REF_IDX]
        if new_ref != 0:
            arena_free(ahdr, data_w, new_ref)
    elif phase == PHASE_COMMITTED and 0 <= slot < nslots:
        base = slot * SLOT_WORDS
        key_hash = stripes[sb + STRIPE_KEY_HASH_IDX]
        new_hash = stripes[sb + STRIPE_NEW_HASH_IDX]
        hh = load_acquire(slots, base + SLOT_HASH_IDX)
        # The slot is still ours if it holds our key or our claim; once tombstoned it may already
        # belong to another stripe, and then our write is known to be complete.
        if hh == key_hash or hh == BUSY_BASE + stripe:
            _write_slot(slots, base, new_hash, stripes[sb + STRIPE_NEW_REF_IDX], stripes[sb + STRIPE_EXPIRY_IDX])
        old_ref = stripes[sb + STRIPE_OLD_REF_IDX]
        if old_ref != 0:
            arena_free(ahdr, data_w, old_ref)
    store_release(stripes, sb + STRIPE_PHASE_IDX, PHASE_IDLE)


@jit
def _move_slot(slots, access, src, dst):
    sbase = src * SLOT_WORDS
    dbase = dst * SLOT_WORDS
    _write_slot(slots, dbase, slots[sbase + SLOT_HASH_IDX], slots[sbase + SLOT_REF_IDX], slots[sbase + SLOT_EXPIRY_IDX])
    access[dst] = access[src]


@jit
def _rehash_pass(hdr, slots, access):
    """Compact tombstones in one cyclic pass from REHASH_POS up to REHASH_P0 (an empty slot, so no
    probe chain crosses it). Each tombstone (or abandoned claim) becomes empty; each entry moves to
    the first empty slot of its probe chain if that is earlier. A move is logged (MOVE_SRC/DST)
    before it starts; copy-then-clear keeps the key findable throughout."""
    mask = len(access) - 1
    p0 = hdr[HDR_REHASH_P0_IDX]
    src = hdr[HDR_MOVE_SRC_IDX] - 1
    if src >= 0:
        dst = hdr[HDR_MOVE_DST_IDX] - 1
        sh = slots[src * SLOT_WORDS + SLOT_HASH_IDX]
        if sh >= RESERVED_HASHES:
            dh = slots[dst * SLOT_WORDS + SLOT_HASH_IDX]
            dref = slots[dst * SLOT_WORDS + SLOT_REF_IDX]
            if dh != sh or dref != slots[src * SLOT_WORDS + SLOT_REF_IDX]:
                _move_slot(slots, access, src, dst)
            _write_slot(slots, src * SLOT_WORDS, EMPTY, 0, 0)
            access[src] = 0
        hdr[HDR_MOVE_SRC_IDX] = 0
    i = hdr[HDR_REHASH_POS_IDX]
    while i != p0:
        base = i * SLOT_WORDS
        hh = slots[base + SLOT_HASH_IDX]
        if EMPTY < hh < RESERVED_HASHES:
            _write_slot(slots, base, EMPTY, 0, 0)
            access[i] = 0
        elif hh >= RESERVED_HASHES:
            j = hh & mask
            while j != i and slots[j * SLOT_WORDS + SLOT_HASH_IDX] != EMPTY:
                j = (j + 1) & mask
            if j != i:
                hdr[HDR_MOVE_DST_IDX] = j + 1
                store_release(hdr, HDR_MOVE_SRC_IDX, i + 1)
                _move_slot(slots, access, i, j)
                _write_slot(slots, base, EMPTY, 0, 0)
                access[i] = 0
                store_release(hdr, HDR_MOVE_SRC_IDX, 0)
        i = (i + 1) & mask
        store_release(hdr, HDR_REHASH_POS_IDX, i)
    count = 0
    for k in range(mask + 1):
        if slots[k * SLOT_WORDS + SLOT_HASH_IDX] >= RESERVED_HASHES:
            count += 1
    # The pass holds every stripe: it is the moment to make the counters exact again (a writer
    # killed between its slot write and its counter update leaves them off by one).
    store_release(hdr, HDR_COUNT_IDX, count)
    store_release(hdr, HDR_TOMBS_IDX, 0)


@jit
def _finish_rehash(hdr, slots, access):
    _rehash_pass(hdr, slots, access)
    store_release(hdr, HDR_REHASH_ACTIVE_IDX, 0)
    seq = hdr[HDR_TABLE_SEQ_IDX]
    store_release(hdr, HDR_TABLE_SEQ_IDX, seq + 1 if seq & 1 else seq + 2)
    fetch_add(hdr, HDR_REHASHES_IDX, 1)


@jit
def table_rehash(ctx_addr, force):
    """Drop every tombstone (in place). Takes every stripe in order, so it cannot deadlock with
    another rehash; readers that miss meanwhile retry. Skipped unless needed (or ``force``).

    Returns OK, BUSY (some stripe stayed locked: check for a dead owner, then retry) or CLOSED.
    """
    ctx, hdr, stripes, slots, access, ahdr, data_w, data_b = table_views(ctx_addr)
    if ctx[CTX_OPEN_IDX] != 1:
        return CLOSED
    owner = ctx[CTX_OWNER_IDX]
    nstripes = hdr[HDR_NSTRIPES_IDX]
    for s in range(nstripes):
        if not _lock(stripes, s, owner):
            for t in range(s):
                _unlock(stripes, t)
            return BUSY
    nslots = ctx[CTX_NSLOTS_IDX]
    if force or (hdr[HDR_COUNT_IDX] + hdr[HDR_TOMBS_IDX]) * 2 > nslots:
        p0 = -1
        for k in range(nslots):
            if slots[k * SLOT_WORDS + SLOT_HASH_IDX] == EMPTY:
                p0 = k
                break
        if p0 >= 0:
            hdr[HDR_REHASH_OWNER_IDX] = owner
            hdr[HDR_REHASH_P0_IDX] = p0
            hdr[HDR_REHASH_POS_IDX] = (p0 + 1) & (nslots - 1)
            hdr[HDR_MOVE_SRC_IDX] = 0
            store_release(hdr, HDR_REHASH_ACTIVE_IDX, 1)
            seq = hdr[HDR_TABLE_SEQ_IDX]
            store_release(hdr, HDR_TABLE_SEQ_IDX, seq + 1 if (seq & 1) == 0 else seq + 2)
            _finish_rehash(hdr, slots, access)
    for s in range(nstripes):
        _unlock(stripes, s)
    return OK


@jit
def table_recover(ctx_addr, dead_owner):
    """Take every stripe held by ``dead_owner`` (whom the caller has found dead through the member
    table), replay its intents, resume its rehash if it was rehashing, and release. Returns the
    number of stripes repaired, or CLOSED."""
    ctx, hdr, stripes, slots, access, ahdr, data_w, data_b = table_views(ctx_addr)
    if ctx[CTX_OPEN_IDX] != 1:
        return CLOSED
    if dead_owner == 0:
        return 0
    owner = ctx[CTX_OWNER_IDX]
    nstripes = hdr[HDR_NSTRIPES_IDX]
    taken = np.zeros(nstripes, np.bool_)
    for s in range(nstripes):
        if lockword_steal(stripes, s * STRIPE_WORDS + STRIPE_LOCK_IDX, dead_owner, owner):
            _replay_intent(hdr, stripes, s, slots, ahdr, data_w)
            taken[s] = True
    ntaken = taken.sum()
    if ntaken > 0 and load_acquire(hdr, HDR_REHASH_ACTIVE_IDX) == 1 and hdr[HDR_REHASH_OWNER_IDX] == dead_owner:
        # A rehash holds every stripe, so we now hold them all.
        hdr[HDR_REHASH_OWNER_IDX] = owner
        _finish_rehash(hdr, slots, access)
    # Release only what we took: another thread of this same member may hold a stripe legitimately.
    for s in range(nstripes):
        if taken[s]:
            _unlock(stripes, s)
    if ntaken > 0:
        fetch_add(hdr, HDR_REPAIRS_IDX, ntaken)
    return ntaken


@jit
def table_stripe_owners(ctx_addr, out):
    """Copy each stripe's lock word (0 = free) into ``out``; with the rehash owner last. For the
    Python side to check owners for liveness when a kernel reported BUSY."""
    ctx, hdr, stripes, slots, access, ahdr, data_w, data_b = table_views(ctx_addr)
    n = hdr[HDR_NSTRIPES_IDX]
    for s in range(n):
        out[s] = load_acquire(stripes, s * STRIPE_WORDS + STRIPE_LOCK_IDX)
    out[n] = hdr[HDR_REHASH_OWNER_IDX] if load_acquire(hdr, HDR_REHASH_ACTIVE_IDX) == 1 else 0
    return n + 1


def table_init(hdr, nslots, max_entries, max_key, max_value, nstripes, track_access, hash_mask, default_ttl_ns):
    """Lay out a fresh table header (creator only, before the segment is published)."""
    hdr[:TABLE_HDR_WORDS] = 0
    hdr[HDR_NSLOTS_IDX] = nslots
    hdr[HDR_MAX_ENTRIES_IDX] = max_entries
    hdr[HDR_MAX_KEY_IDX] = max_key
    hdr[HDR_MAX_VALUE_IDX] = max_value
    hdr[HDR_NSTRIPES_IDX] = nstripes
    hdr[HDR_TRACK_ACCESS_IDX] = 1 if track_access else 0
    hdr[HDR_HASH_MASK_IDX] = hash_mask
    hdr[HDR_DEFAULT_TTL_IDX] = default_ttl_ns
