"""The L1 hash table: open addressing with linear probing, in shared memory, lock-free readers.

Keys are ``namespace \\0 key`` bytes, hashed by the caller (xxh3-64, remapped above the reserved
values); the full key bytes live in the arena block beside the value and are compared on every
hit, so a 64-bit collision never returns another key's value.

Who may call what:

- readers (:func:`table_lookup`): any number, any process, any thread, no lock, no store except
  hit/miss counters in their own member slot and the CLOCK access byte. A reader never returns a
  torn value: every slot is a seqlock record, and a value is copied between the sequence reads into
  the caller's buffer (one per thread: a shared scratch buffer would be filled by two threads at
  once, since kernels run without the GIL).
- writers (:func:`table_put`, :func:`table_delete`): exclusive per *stripe* of hashes through a
  lock word set by one CAS to the writer's owner word (member slot + epoch), so an owner that dies
  is recognisable. Before touching a slot a writer records an *intent* in its stripe; whoever takes
  a stripe from a dead owner replays it (kernels/repair.py).
- rehash (kernels/repair.py) holds every stripe.

A journaled write (flag J_JOURNAL) is one step in every tier: the intent is PREPARED with the new
block written, the journal record is appended (its position stored in the intent, JPOS, before it
is published), then the intent is COMMITTED and applied. Recovery rolls a PREPARED write forward
when its record reached the journal and undoes it when it did not, so L1, the journal and L3 never
disagree after a kill.

Every size a kernel uses comes from the handle's private context, copied and validated at attach:
a co-tenant that rewrites a shared word can make operations fail or return CORRUPT, never make a
kernel touch memory outside its mappings. Every index derived from a shared word is checked.

Context (``ctx``, a private int64 array per handle; addresses are those of *this* process)::

    0 OPEN  1 TABLE (header addr)  2 STRIPES  3 SLOTS  4 ACCESS  5 NSLOTS  6 ARENA (header addr)
    7 ARENA_DATA  8 ARENA_BYTES  9 (unused)  10 OUT_BYTES (every output buffer's size)  11 OWNER
    12 MEMBER (stats addr)  13 NSTRIPES  14 JOURNAL (ring header addr, 0 = none)  15 JOURNAL_DATA
    16 JOURNAL_BYTES  17 MAX_KEY  18 MAX_VALUE  19 TRACK_ACCESS  20 NCLASSES  21 HASH_MASK
    22 BEAT (this member's heartbeat word addr, 0 = none)
    32-95 CLASS_SIZE[64]   the arena's class sizes

Slot (4 words)::      HASH | SEQ | REF (arena reference) | EXPIRY (wall ns, 0 = never)
Stripe (16 words, two 64-byte lines: writers of different stripes never share a line)::

    LOCK | PHASE | SLOT | KEY_HASH | NEW_HASH | NEW_REF | OLD_REF | EXPIRY | VERSION | JPOS
    (VERSION counts the stripe's writes: a promotion from a lower tier is applied only if no write
    came in between; JPOS is the journal position + 1 of the write's record, 0 = none reserved)

Table header (int64 words, one 64-byte line per group of words written together)::

    line 0  NSLOTS MAX_ENTRIES MAX_KEY MAX_VALUE NSTRIPES TRACK_ACCESS HASH_MASK DEFAULT_TTL_NS
    line 1  TABLE_SEQ                                    odd while a rehash runs
    line 2  COUNT TOMBS                                  live entries, tombstones
    line 3  CLOCK_HAND
    line 4  EVICTIONS EXPIRATIONS REHASHES REPAIRS INSERTS UPDATES DELETES
    line 5  REHASH_ACTIVE REHASH_OWNER REHASH_P0 REHASH_POS MOVE_SRC MOVE_DST   (rehash intent)
            RETIRED_HITS RETIRED_MISSES
    line 6  RECOUNT                   1 = COUNT and TOMBS may be off: a writer died holding a stripe

COUNT and TOMBS are updated after the slot write, outside the intent: a writer killed between the
two leaves them off by one, and no replay can tell whether its update landed. So recovery marks
RECOUNT and then, holding every stripe, counts the slots again (kernels/repair.py); a rehash does
the same.
"""

import numpy as np

from nt_memory.kernels._jit import jit
from nt_memory.kernels.arena import arena_alloc, arena_block, arena_free, ref_offset, write_bytes
from nt_memory.kernels.atomics import (
    address_to_bytes,
    address_to_words,
    bytes_view,
    cas,
    clock_ns,
    coarse_clock_ns,
    copy_bytes,
    cpu_relax,
    fetch_add,
    load_acquire,
    load_relaxed,
    load_u64_le,
    prefetch,
    store_release,
)
from nt_memory.kernels.journal import journal_append
from nt_memory.kernels.layout.arena import ARENA_HDR_WORDS
from nt_memory.kernels.layout.journal import JOURNAL_DELETE, JOURNAL_PUT, JOURNAL_PUT_EMB
from nt_memory.kernels.layout.ring import RING_HDR_WORDS
from nt_memory.kernels.layout.table import (
    ALL_STRIPES,
    BUSY_BASE,
    COARSE_SLACK_NS,
    CTX_ACCESS_IDX,
    CTX_ARENA_BYTES_IDX,
    CTX_ARENA_DATA_IDX,
    CTX_ARENA_IDX,
    CTX_CLASS_SIZE_IDX,
    CTX_HASH_MASK_IDX,
    CTX_JOURNAL_BYTES_IDX,
    CTX_JOURNAL_DATA_IDX,
    CTX_JOURNAL_IDX,
    CTX_MAX_KEY_IDX,
    CTX_MAX_VALUE_IDX,
    CTX_MEMBER_IDX,
    CTX_NCLASSES_IDX,
    CTX_NSLOTS_IDX,
    CTX_NSTRIPES_IDX,
    CTX_OPEN_IDX,
    CTX_OUT_BYTES_IDX,
    CTX_OWNER_IDX,
    CTX_SLOTS_IDX,
    CTX_STRIPES_IDX,
    CTX_TABLE_IDX,
    CTX_TRACK_ACCESS_IDX,
    CTX_WORDS,
    EMPTY,
    HDR_CLOCK_HAND_IDX,
    HDR_COUNT_IDX,
    HDR_DEFAULT_TTL_IDX,
    HDR_DELETES_IDX,
    HDR_EVICTIONS_IDX,
    HDR_EXPIRATIONS_IDX,
    HDR_HASH_MASK_IDX,
    HDR_INSERTS_IDX,
    HDR_MAX_ENTRIES_IDX,
    HDR_MAX_KEY_IDX,
    HDR_MAX_VALUE_IDX,
    HDR_NSLOTS_IDX,
    HDR_NSTRIPES_IDX,
    HDR_TABLE_SEQ_IDX,
    HDR_TOMBS_IDX,
    HDR_TRACK_ACCESS_IDX,
    HDR_UPDATES_IDX,
    J_HELD,
    J_IF_EXPIRED,
    J_JOURNAL,
    J_NO_L1,
    J_PROMOTE,
    MEMBER_HITS_IDX,
    MEMBER_MISSES_IDX,
    MEMBER_STATS_WORDS,
    PHASE_COMMITTED,
    PHASE_IDLE,
    PHASE_PREPARED,
    PREFETCH_WRITE,
    REHASH_AT_QUARTERS,
    RESERVED_HASHES,
    SLOT_EXPIRY_IDX,
    SLOT_HASH_IDX,
    SLOT_REF_IDX,
    SLOT_SEQ_IDX,
    SLOT_WORDS,
    SPINS,
    STRIPE_EXPIRY_IDX,
    STRIPE_JPOS_IDX,
    STRIPE_KEY_HASH_IDX,
    STRIPE_LOCK_IDX,
    STRIPE_NEW_HASH_IDX,
    STRIPE_NEW_REF_IDX,
    STRIPE_OLD_REF_IDX,
    STRIPE_PHASE_IDX,
    STRIPE_SLOT_IDX,
    STRIPE_VERSION_IDX,
    STRIPE_WORDS,
    TABLE_HDR_WORDS,
    TOMB,
)
from nt_memory.kernels.lockword import lockword_acquire, lockword_release, lockword_try_acquire
from nt_memory.kernels.seqlock import seq_read_begin, seq_read_valid, seq_write_begin, seq_write_end
from nt_memory.kernels.status import (
    BUSY,
    CLOSED,
    CORRUPT,
    EXPIRED,
    FULL,
    KEY_TOO_LARGE,
    NEEDS_REHASH,
    NOT_FOUND,
    OK,
    OUT_TOO_SMALL,
    STALE,
    VALUE_TOO_LARGE,
)
from nt_memory.kernels.xxh3 import xxh3_64

# ``table_put``'s version argument when none applies, and its embedding address and length when
# the put has none. Typed int64: a literal 0 would make numba compile a second ``table_put``,
# specialised for the constant.
NO_VERSION = np.int64(0)
NO_EMBEDDING = np.int64(0)


@jit(inline="always")
def address_of(ary):
    """The address of ``ary``'s data as an int64, the type ``table_put`` is compiled for: numba
    types ``.ctypes.data`` as uint64, and callers passing both types compiled it twice."""
    return np.int64(ary.ctypes.data)


@jit(inline="always")
def key_hash(ctx, key):
    """The table hash of stored key bytes: XXH3-64 under the table's mask, moved above the
    reserved marker values (the same as the Python side's ``HotCache.hash_bytes``)."""
    h = np.int64(xxh3_64(key, len(key)) & np.uint64(ctx[CTX_HASH_MASK_IDX]))
    return h + RESERVED_HASHES if h < RESERVED_HASHES else h


@jit(inline="always")
def stripe_of(h, nstripes):
    return (h >> 32) & (nstripes - 1)


@jit(inline="always")
def _key_matches(data_b, start, klen, key):
    """The stored key at ``data_b[start:]`` equals ``key`` (``klen`` bytes): 8 bytes at a time."""
    j = 0
    while j + 8 <= klen:
        if load_u64_le(data_b, start + j) != load_u64_le(key, j):
            return False
        j += 8
    while j < klen:
        if data_b[start + j] != key[j]:
            return False
        j += 1
    return True


@jit(inline="always")
def _copy_value(data_w, data_b, src, n, out):
    """Copy ``n`` bytes of a block payload at ``src`` (16-byte aligned) into ``out`` (``n <=
    len(out)``: checked by the caller). Small values word by word (the block is padded to its
    class size, so reading to the next word boundary stays inside it; ``out`` has 8 spare bytes),
    larger ones with memcpy. The copy may be torn by a writer: the caller's seqlock discards it."""
    words = (n + 7) >> 3
    if n <= 256 and (out.ctypes.data & 7) == 0 and len(out) >= words * 8:
        out_w = address_to_words(out.ctypes.data, words)  # not .view(): that is a call per get
        base = src >> 3
        for j in range(words):
            out_w[j] = data_w[base + j]
    else:
        copy_bytes(out, 0, data_b, src, n)


@jit(inline="always")
def expired(expiry):
    if expiry == 0:
        return False
    if coarse_clock_ns() + COARSE_SLACK_NS < expiry:
        return False
    return clock_ns() >= expiry


@jit(inline="always")
def table_views(ctx_addr):
    """The views of one handle's segments, rebuilt from the integer addresses and the private
    sizes in its context."""
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
    sizes = ctx[CTX_CLASS_SIZE_IDX : CTX_CLASS_SIZE_IDX + ctx[CTX_NCLASSES_IDX]]
    return ctx, hdr, stripes, slots, access, ahdr, data_w, data_b, sizes


@jit(inline="always")
def journal_views(ctx):
    cap = ctx[CTX_JOURNAL_BYTES_IDX]
    jhdr = address_to_words(ctx[CTX_JOURNAL_IDX], RING_HDR_WORDS)
    jw = address_to_words(ctx[CTX_JOURNAL_DATA_IDX], cap >> 3)
    jb = address_to_bytes(ctx[CTX_JOURNAL_DATA_IDX], cap)
    return jhdr, jw, jb, cap


# ----------------------------------------------------------------------------------------- readers


@jit(inline="always")
def _read_slot(slots, base, h, data_w, data_b, data_bytes, key, out, copy):
    """Read the slot at word ``base`` if it holds ``key``: >= 0 value length (copied into ``out``
    when ``copy``) packed as ``len << 8 | tag``; NOT_FOUND if it holds another key; EXPIRED; BUSY if
    the seqlock stayed odd or changing past the spin budget; OUT_TOO_SMALL; CORRUPT."""
    seq_idx = base + SLOT_SEQ_IDX
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
        start, vlen, blen = arena_block(data_w, data_bytes, ref)
        result = NOT_FOUND
        if start >= 0 and blen == klen and _key_matches(data_b, start + vlen, klen, key):
            tag = data_b[start] if vlen > 0 else 0
            result = (vlen << 8) | tag
            if copy:
                if vlen > len(out):
                    result = OUT_TOO_SMALL
                else:
                    _copy_value(data_w, data_b, start, vlen, out)
        if not seq_read_valid(slots, seq_idx, s1):
            continue  # torn: a writer moved in meanwhile, whatever we saw is discarded
        if start < 0:
            return CORRUPT  # a stable slot naming no live block: the arena was rewritten
        if result >= 0 and expired(expiry):
            return EXPIRED
        return result
    return BUSY


@jit(inline="always")
def table_lookup(ctx_addr, h, key, out, copy):
    """Look ``key`` (hash ``h``, already fixed) up. Any process or thread, no lock.

    Returns ``len << 8 | tag`` (the value copied into ``out`` when ``copy``), or NOT_FOUND, EXPIRED,
    KEY_TOO_LARGE, BUSY (a writer or rehash held on past the spin budget: maybe dead, see
    ``table_recover``), CLOSED, CORRUPT or OUT_TOO_SMALL.
    """
    ctx, hdr, stripes, slots, access, ahdr, data_w, data_b, sizes = table_views(ctx_addr)
    if ctx[CTX_OPEN_IDX] != 1:
        return CLOSED
    if len(key) > ctx[CTX_MAX_KEY_IDX]:
        return KEY_TOO_LARGE
    member = address_to_words(ctx[CTX_MEMBER_IDX], MEMBER_STATS_WORDS)
    mask = ctx[CTX_NSLOTS_IDX] - 1
    data_bytes = ctx[CTX_ARENA_BYTES_IDX]
    for _ in range(SPINS):
        ts = load_acquire(hdr, HDR_TABLE_SEQ_IDX)
        i = h & mask
        for _probe in range(mask + 1):
            base = i * SLOT_WORDS
            hh = load_acquire(slots, base + SLOT_HASH_IDX)
            if hh == EMPTY:
                break
            if hh == h:
                r = _read_slot(slots, base, h, data_w, data_b, data_bytes, key, out, copy)
                if r >= 0:
                    member[MEMBER_HITS_IDX] += 1
                    if ctx[CTX_TRACK_ACCESS_IDX] != 0 and access[i] == 0:
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


@jit(inline="always")  # into the caller's code: no call, no refcounting of the three arrays
def l1_lookup(handle, h, key, out):
    """Look a key up from ``@njit`` code (or Python). ``handle`` is :meth:`HotCache.njit_handle`,
    ``h`` :meth:`HotCache.key_hash`, ``key`` :meth:`HotCache.key_array` (or any uint8 array / bytes
    holding ``namespace \\0 key``), ``out`` a uint8 array receiving the encoded value.

    Returns ``length << 8 | tag`` (>= 0), or a negative :mod:`nt_memory.kernels.status` code:
    NOT_FOUND, EXPIRED, BUSY (a writer stalled: retry, or let Python recover a dead one),
    OUT_TOO_SMALL, CLOSED. No lock is taken; the value is never torn.
    """
    return table_lookup(handle.ctypes.data, h, key, out, True)


@jit(inline="always")
def table_prefetch(ctx_addr, h, stage):
    """Warm the caches for a later :func:`table_lookup` of hash ``h``, so a batch of lookups overlaps
    its memory misses (a writer's too, by :func:`table_put`). Any caller, no lock, no store, and
    nothing read is trusted: stage 0 fetches ``h``'s home slot and its access byte (a writer's
    stage 0 also fetches its stripe); stage 1 (issued once stage 0's lines had time to arrive)
    reads the home slot's hash and reference without the seqlock and, when the hash is ``h``'s,
    fetches the lines of the first 128 bytes of the block it names. Every address is bounded by
    the private sizes, so a stale or hostile word costs a useless prefetch, never a wrong answer."""
    ctx = address_to_words(ctx_addr, CTX_WORDS)
    nslots = ctx[CTX_NSLOTS_IDX]
    i = h & (nslots - 1)
    slots = address_to_words(ctx[CTX_SLOTS_IDX], nslots * SLOT_WORDS)
    if stage == 0 or stage == PREFETCH_WRITE:
        prefetch(slots, i * SLOT_WORDS)
        if ctx[CTX_TRACK_ACCESS_IDX] != 0:
            prefetch(address_to_bytes(ctx[CTX_ACCESS_IDX], nslots), i)
        if stage == PREFETCH_WRITE:
            nstripes = ctx[CTX_NSTRIPES_IDX]
            stripes = address_to_words(ctx[CTX_STRIPES_IDX], nstripes * STRIPE_WORDS)
            prefetch(stripes, stripe_of(h, nstripes) * STRIPE_WORDS)
        return
    if load_relaxed(slots, i * SLOT_WORDS + SLOT_HASH_IDX) != h:
        return  # probing past the home slot, or a miss: not worth guessing
    off = ref_offset(load_relaxed(slots, i * SLOT_WORDS + SLOT_REF_IDX))
    data_bytes = ctx[CTX_ARENA_BYTES_IDX]
    if off >= 0 and off + 128 <= data_bytes:
        data_b = address_to_bytes(ctx[CTX_ARENA_DATA_IDX], data_bytes)
        # Its first 128 bytes, which lie on three lines when the block starts past the middle of
        # one (a 96-byte block at offset 48 in its line: the key, compared first, is on the third).
        prefetch(data_b, off)
        prefetch(data_b, off + 64)
        prefetch(data_b, off + 127)


@jit
def table_get(ctx_addr, h, key, out_addr):
    """The Python fast path: :func:`table_lookup` into the calling thread's buffer at ``out_addr``
    (``ctx[OUT_BYTES]`` bytes)."""
    ctx = address_to_words(ctx_addr, CTX_WORDS)
    out = address_to_bytes(out_addr, ctx[CTX_OUT_BYTES_IDX])
    return table_lookup(ctx_addr, h, key, out, True)


@jit
def table_live_count(ctx_addr):
    """Entries whose expiry has not passed (what ``len`` and ``stats`` report): one pass over the
    slots, no lock, so a count taken while writers run is a moment's approximation."""
    ctx, hdr, stripes, slots, access, ahdr, data_w, data_b, sizes = table_views(ctx_addr)
    if ctx[CTX_OPEN_IDX] != 1:
        return CLOSED
    now = clock_ns()
    live = 0
    for i in range(ctx[CTX_NSLOTS_IDX]):
        base = i * SLOT_WORDS
        if load_acquire(slots, base + SLOT_HASH_IDX) >= RESERVED_HASHES:
            expiry = slots[base + SLOT_EXPIRY_IDX]
            if expiry == 0 or expiry > now:
                live += 1
    return live


@jit
def table_contains(ctx_addr, h, key):
    """Like :func:`table_lookup` without copying the value."""
    out = address_to_bytes(ctx_addr, 0)
    return table_lookup(ctx_addr, h, key, out, False)


# ----------------------------------------------------------------------------------------- writers


@jit(inline="always")
def lock_stripe_word(stripes, stripe, owner):
    return lockword_acquire(stripes, stripe * STRIPE_WORDS + STRIPE_LOCK_IDX, owner)


@jit(inline="always")
def try_lock_stripe_word(stripes, stripe, owner):
    return lockword_try_acquire(stripes, stripe * STRIPE_WORDS + STRIPE_LOCK_IDX, owner)


@jit(inline="always")
def unlock_stripe_word(stripes, stripe):
    lockword_release(stripes, stripe * STRIPE_WORDS + STRIPE_LOCK_IDX)


@jit(inline="always")
def write_slot(slots, base, new_hash, ref, expiry):
    """Write a slot under its seqlock (caller holds the stripe that owns it)."""
    odd = seq_write_begin(slots, base + SLOT_SEQ_IDX)
    slots[base + SLOT_REF_IDX] = ref
    slots[base + SLOT_EXPIRY_IDX] = expiry
    store_release(slots, base + SLOT_HASH_IDX, new_hash)
    seq_write_end(slots, base + SLOT_SEQ_IDX, odd)


@jit(inline="always")
def _find(slots, mask, h, key, data_w, data_b, data_bytes):
    """Probe for ``key`` as its stripe's lock holder: (slot of the key or -1, first free slot or -1,
    that free slot was a tombstone). Entries of our stripe cannot change under us, so no seqlock."""
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
            start, vlen, blen = arena_block(data_w, data_bytes, slots[base + SLOT_REF_IDX])
            if start >= 0 and blen == klen and _key_matches(data_b, start + vlen, klen, key):
                return i, free, free_tomb
        i = (i + 1) & mask
    return -1, free, free_tomb


@jit(inline="always")
def begin_intent(stripes, sb, slot, key_hash, new_hash, new_ref, old_ref, expiry):
    """Record a write's intent as PREPARED (caller holds the stripe whose words start at ``sb``)."""
    stripes[sb + STRIPE_SLOT_IDX] = slot
    stripes[sb + STRIPE_KEY_HASH_IDX] = key_hash
    stripes[sb + STRIPE_NEW_HASH_IDX] = new_hash
    stripes[sb + STRIPE_NEW_REF_IDX] = new_ref
    stripes[sb + STRIPE_OLD_REF_IDX] = old_ref
    stripes[sb + STRIPE_EXPIRY_IDX] = expiry
    stripes[sb + STRIPE_JPOS_IDX] = 0
    # Release: every field above is visible to a recoverer before the phase says to read them.
    store_release(stripes, sb + STRIPE_PHASE_IDX, PHASE_PREPARED)


@jit(inline="always")
def apply_intent(ctx, stripes, stripe, slots, ahdr, data_w, sizes):
    """Write a COMMITTED intent into its slot if the slot is still ours and free the old block;
    then IDLE. Idempotent: the normal path and recovery both end here."""
    sb = stripe * STRIPE_WORDS
    slot = stripes[sb + STRIPE_SLOT_IDX]
    if 0 <= slot < ctx[CTX_NSLOTS_IDX]:
        base = slot * SLOT_WORDS
        hh = load_acquire(slots, base + SLOT_HASH_IDX)
        # The slot is still ours if it holds our key or our claim; once tombstoned it may already
        # belong to another stripe, and then our write is known to be complete.
        if hh == stripes[sb + STRIPE_KEY_HASH_IDX] or hh == BUSY_BASE + stripe:
            new_hash = stripes[sb + STRIPE_NEW_HASH_IDX]
            write_slot(slots, base, new_hash, stripes[sb + STRIPE_NEW_REF_IDX], stripes[sb + STRIPE_EXPIRY_IDX])
    old_ref = stripes[sb + STRIPE_OLD_REF_IDX]
    if old_ref != 0:
        arena_free(ahdr, data_w, old_ref, ctx[CTX_ARENA_BYTES_IDX], sizes)
    store_release(stripes, sb + STRIPE_PHASE_IDX, PHASE_IDLE)


@jit
def undo_intent(ctx, hdr, stripes, stripe, slots, ahdr, data_w, sizes):
    """Undo a PREPARED intent: unclaim a slot we claimed, free the new block; then IDLE."""
    sb = stripe * STRIPE_WORDS
    slot = stripes[sb + STRIPE_SLOT_IDX]
    if 0 <= slot < ctx[CTX_NSLOTS_IDX]:
        if cas(slots, slot * SLOT_WORDS + SLOT_HASH_IDX, BUSY_BASE + stripe, TOMB) == BUSY_BASE + stripe:
            fetch_add(hdr, HDR_TOMBS_IDX, 1)
    new_ref = stripes[sb + STRIPE_NEW_REF_IDX]
    if new_ref != 0:
        arena_free(ahdr, data_w, new_ref, ctx[CTX_ARENA_BYTES_IDX], sizes)
    store_release(stripes, sb + STRIPE_PHASE_IDX, PHASE_IDLE)


@jit
def remove_locked(ctx, hdr, stripes, stripe, slots, i, key_hash, ahdr, data_w, sizes, was_expired, evicted):
    """Tombstone slot ``i`` (key hash ``key_hash``) under ``stripe``, which the caller holds."""
    sb = stripe * STRIPE_WORDS
    begin_intent(stripes, sb, i, key_hash, TOMB, 0, slots[i * SLOT_WORDS + SLOT_REF_IDX], 0)
    store_release(stripes, sb + STRIPE_PHASE_IDX, PHASE_COMMITTED)
    apply_intent(ctx, stripes, stripe, slots, ahdr, data_w, sizes)
    fetch_add(hdr, HDR_COUNT_IDX, -1)
    fetch_add(hdr, HDR_TOMBS_IDX, 1)
    if was_expired:
        fetch_add(hdr, HDR_EXPIRATIONS_IDX, 1)
    elif evicted:
        fetch_add(hdr, HDR_EVICTIONS_IDX, 1)


@jit
def evict_one(ctx, hdr, stripes, slots, access, own_stripe, ahdr, data_w, sizes):
    """CLOCK: advance the shared hand past recently used entries (clearing their bit) and remove the
    first entry not used since the hand last passed, or an expired one. Caller holds ``own_stripe``
    (or every stripe: ALL_STRIPES); other stripes are only tried, never waited for (no deadlock).
    Returns OK or FULL."""
    mask = ctx[CTX_NSLOTS_IDX] - 1
    nstripes = ctx[CTX_NSTRIPES_IDX]
    owner = ctx[CTX_OWNER_IDX]
    track = ctx[CTX_TRACK_ACCESS_IDX] != 0
    sweeps = 2 * (mask + 1)
    for step in range(sweeps + (mask + 1) + 64):
        i = fetch_add(hdr, HDR_CLOCK_HAND_IDX, 1) & mask
        base = i * SLOT_WORDS
        hh = load_acquire(slots, base + SLOT_HASH_IDX)
        if hh < RESERVED_HASHES:
            continue
        was_expired = expired(slots[base + SLOT_EXPIRY_IDX])
        # After two sweeps every entry had its second chance: readers that keep touching them all
        # (a table far smaller than what threads read) must not make a put fail with FULL.
        if track and access[i] != 0 and not was_expired and step < sweeps:
            access[i] = 0
            continue
        st = stripe_of(hh, nstripes)
        other = st != own_stripe and own_stripe != ALL_STRIPES
        if other and not try_lock_stripe_word(stripes, st, owner):
            continue
        found = load_acquire(slots, base + SLOT_HASH_IDX) == hh
        if found:
            remove_locked(ctx, hdr, stripes, st, slots, i, hh, ahdr, data_w, sizes, was_expired, True)
            access[i] = 0
        if other:
            unlock_stripe_word(stripes, st)
        if found:
            return OK
    return FULL


@jit(inline="always")
def _alloc_block(ctx, hdr, stripes, slots, access, stripe, ahdr, data_w, data_b, sizes, key, value):
    """Allocate and fill the block for a new value (evicting while the arena is full): (reference or
    a negative status, whether eviction ran). The block is unreachable until an intent names it."""
    data_bytes = ctx[CTX_ARENA_BYTES_IDX]
    ref = arena_alloc(ahdr, data_w, len(value) + len(key), data_bytes, sizes)
    attempts = 0
    while ref == FULL and attempts < 64:
        if evict_one(ctx, hdr, stripes, slots, access, stripe, ahdr, data_w, sizes) != OK:
            break
        attempts += 1
        ref = arena_alloc(ahdr, data_w, len(value) + len(key), data_bytes, sizes)
    if ref > 0:
        off = ref_offset(ref)
        data_w[(off >> 3) + 1] = len(key) | (len(value) << 32)
        write_bytes(data_b, write_bytes(data_b, off + 16, value), key)
    return ref, attempts > 0


@jit(inline="always")
def _claim_slot(stripes, sb, stripe, slots, mask, start, hdr):
    """Claim a free slot for a new key, probing from ``start``, against writers of other stripes
    (our key cannot be further on: only our stripe inserts it). The intent names each slot before
    its CAS, so a kill right after a won CAS is undone. Returns the slot or -1."""
    claim = BUSY_BASE + stripe
    i = start
    for _ in range(mask + 1):
        hh = load_acquire(slots, i * SLOT_WORDS + SLOT_HASH_IDX)
        if hh == EMPTY or hh == TOMB:
            store_release(stripes, sb + STRIPE_SLOT_IDX, i)
            if cas(slots, i * SLOT_WORDS + SLOT_HASH_IDX, hh, claim) == hh:
                if hh == TOMB:
                    fetch_add(hdr, HDR_TOMBS_IDX, -1)
                return i
        i = (i + 1) & mask
    store_release(stripes, sb + STRIPE_SLOT_IDX, -1)
    return -1


@jit(inline="always")
def _journal(ctx, stripes, sb, kind, key, value, data_expiry, emb):
    jhdr, jw, jb, cap = journal_views(ctx)
    owner = ctx[CTX_OWNER_IDX]
    return journal_append(jhdr, jw, jb, cap, owner, kind, key, value, data_expiry, emb, stripes, sb + STRIPE_JPOS_IDX)


@jit(inline="always")
def _room_for_new(ctx, hdr, stripes, slots, access, stripe, ahdr, data_w, data_b, sizes, h, key):
    """Make room for a new key: evict at max_entries; NEEDS_REHASH past the tombstone threshold.
    Returns (status, found, free) after any eviction (which may have removed our own key)."""
    mask = ctx[CTX_NSLOTS_IDX] - 1
    data_bytes = ctx[CTX_ARENA_BYTES_IDX]
    # Twice at most: probe, and probe again after an eviction. A loop, not two copies of the
    # probe: every copy numba inlines is compile time on the first run. (A table a repaired count
    # found over max_entries is trimmed by the repair itself: table_recount.)
    for attempt in range(2):
        found, free, free_tomb = _find(slots, mask, h, key, data_w, data_b, data_bytes)
        if found >= 0:
            return OK, found, free
        if attempt == 1 or hdr[HDR_COUNT_IDX] < hdr[HDR_MAX_ENTRIES_IDX]:
            break
        if evict_one(ctx, hdr, stripes, slots, access, stripe, ahdr, data_w, sizes) != OK:
            return FULL, -1, -1
    filled = hdr[HDR_COUNT_IDX] + hdr[HDR_TOMBS_IDX] + 1
    if found < 0 and not free_tomb and filled * 4 > (mask + 1) * REHASH_AT_QUARTERS:
        return NEEDS_REHASH, -1, -1
    return OK, found, free


@jit
def _put_block(ctx_addr, stripe, h, key_addr, klen, val_addr, vlen):
    """Room and a filled block for the value at ``val_addr`` (``vlen`` bytes) that L1 will cache
    under the key at ``key_addr``: (status, reference, slot of the key or -1, first free slot or
    -1). On a status other than OK nothing is allocated.

    Not inlined, and so given addresses rather than views: its body (probing, eviction,
    allocation) is most of a put's code, and numba's inlining of it into each writer made the
    first run compile for over a minute. numba passes an array as seven words, so the two arrays
    it took cost 14 words of arguments per call; two addresses and lengths cost four."""
    ctx, hdr, stripes, slots, access, ahdr, data_w, data_b, sizes = table_views(ctx_addr)
    key = address_to_bytes(key_addr, klen)
    value = address_to_bytes(val_addr, vlen)
    ref = 0
    # Room first, then the block; if allocating evicted entries (our own key's among them,
    # perhaps), room once more. One inlined copy of each step, as in _room_for_new.
    while True:
        st, found, free = _room_for_new(ctx, hdr, stripes, slots, access, stripe, ahdr, data_w, data_b, sizes, h, key)
        if st != OK:
            if ref > 0:
                arena_free(ahdr, data_w, ref, ctx[CTX_ARENA_BYTES_IDX], sizes)
            return st, 0, -1, -1
        if ref > 0:
            return OK, ref, found, free
        ref, evicted = _alloc_block(ctx, hdr, stripes, slots, access, stripe, ahdr, data_w, data_b, sizes, key, value)
        if ref < 0:
            return ref, 0, -1, -1
        if not evicted:
            return OK, ref, found, free


@jit(inline="always")
def _count_put(hdr, access, slot, found, cache):
    # A new entry starts unreferenced (it must be read to earn a second chance), so a burst of
    # one-off inserts evicts itself before it evicts the working set; an update counts as a use.
    access[slot] = 1 if (found >= 0 and cache) else 0
    if not cache:
        fetch_add(hdr, HDR_COUNT_IDX, -1)
        fetch_add(hdr, HDR_TOMBS_IDX, 1)
    elif found >= 0:
        fetch_add(hdr, HDR_UPDATES_IDX, 1)
    else:
        fetch_add(hdr, HDR_COUNT_IDX, 1)
        fetch_add(hdr, HDR_INSERTS_IDX, 1)


@jit(inline="always")
def put_locked(
    ctx,
    hdr,
    stripes,
    stripe,
    slots,
    access,
    ahdr,
    data_w,
    data_b,
    sizes,
    h,
    key,
    value,
    expiry,
    data_expiry,
    flags,
    version,
    emb,
):
    """table_put's work once the stripe is held; every exit leaves the intent IDLE."""
    sb = stripe * STRIPE_WORDS
    if (flags & J_PROMOTE) != 0 and stripes[sb + STRIPE_VERSION_IDX] != version:
        return STALE
    cache = (flags & J_NO_L1) == 0
    mask = ctx[CTX_NSLOTS_IDX] - 1
    if cache:
        st, ref, found, free = _put_block(
            address_of(ctx), stripe, h, address_of(key), len(key), address_of(value), len(value)
        )
        if st != OK:
            return st
    else:
        ref = 0
        found, free, _tomb = _find(slots, mask, h, key, data_w, data_b, ctx[CTX_ARENA_BYTES_IDX])
    old_ref = slots[found * SLOT_WORDS + SLOT_REF_IDX] if found >= 0 else 0
    begin_intent(stripes, sb, found, h, h if cache else TOMB, ref, old_ref, expiry)
    slot = found
    if cache and found < 0:
        slot = _claim_slot(stripes, sb, stripe, slots, mask, free if free >= 0 else h & mask, hdr)
    st = OK
    if (flags & J_JOURNAL) != 0:
        st = _journal(ctx, stripes, sb, JOURNAL_PUT_EMB if len(emb) else JOURNAL_PUT, key, value, data_expiry, emb)
    elif cache and slot < 0:
        st = NEEDS_REHASH  # cannot happen below the rehash threshold; nothing stored
    if st != OK:
        undo_intent(ctx, hdr, stripes, stripe, slots, ahdr, data_w, sizes)
        return st
    if cache and slot < 0:
        # The journal has the write but L1 has no slot for it: L1 simply does not cache it.
        arena_free(ahdr, data_w, ref, ctx[CTX_ARENA_BYTES_IDX], sizes)
        stripes[sb + STRIPE_NEW_REF_IDX] = 0
    store_release(stripes, sb + STRIPE_PHASE_IDX, PHASE_COMMITTED)
    apply_intent(ctx, stripes, stripe, slots, ahdr, data_w, sizes)
    if slot >= 0:
        _count_put(hdr, access, slot, found, cache)
    if (flags & J_PROMOTE) == 0:
        stripes[sb + STRIPE_VERSION_IDX] += 1
    return OK


@jit(inline="always")
def write_check(ctx, key, vlen, flags):
    if ctx[CTX_OPEN_IDX] != 1:
        return CLOSED
    if len(key) > ctx[CTX_MAX_KEY_IDX]:
        return KEY_TOO_LARGE
    if vlen > ctx[CTX_MAX_VALUE_IDX] and (flags & J_NO_L1) == 0:
        return VALUE_TOO_LARGE
    if (flags & J_JOURNAL) != 0 and ctx[CTX_JOURNAL_IDX] == 0:
        return CORRUPT
    return OK


@jit
def table_put(ctx_addr, h, key_addr, klen, val_addr, vlen, expiry, data_expiry, flags, version, emb_addr, elen):
    """Insert or replace the key at ``key_addr`` (``klen`` bytes) -> the value at ``val_addr``
    (``vlen`` encoded bytes, tag first). ``expiry`` bounds the stay in L1 and ``data_expiry`` the
    data's life (journal record); wall ns, 0 = never. ``flags``: J_*. ``emb_addr``/``elen``: the
    key's embedding as float32 bytes, journaled with the value (``elen`` 0: none). Many writers;
    exclusive per stripe. Addresses, not arrays: numba passes an array as seven words, and the
    three arrays this took were 21 words of arguments on every put.

    Returns OK, KEY_TOO_LARGE / VALUE_TOO_LARGE (nothing stored), FULL (no room even after
    eviction), NEEDS_REHASH (nothing stored: rehash, then retry), JOURNAL_FULL (nothing stored: let
    the flusher catch up), STALE (J_PROMOTE and the stripe was written meanwhile: nothing stored),
    BUSY (the stripe or the journal stayed locked: check its owner, maybe recover), CLOSED or
    CORRUPT.
    """
    ctx, hdr, stripes, slots, access, ahdr, data_w, data_b, sizes = table_views(ctx_addr)
    key = address_to_bytes(key_addr, klen)
    value = address_to_bytes(val_addr, vlen)
    emb = address_to_bytes(emb_addr, elen)
    st = write_check(ctx, key, vlen, flags)
    if st != OK:
        return st
    stripe = stripe_of(h, ctx[CTX_NSTRIPES_IDX])
    held = (flags & J_HELD) != 0
    if not held and not lock_stripe_word(stripes, stripe, ctx[CTX_OWNER_IDX]):
        return BUSY
    st = put_locked(
        ctx,
        hdr,
        stripes,
        stripe,
        slots,
        access,
        ahdr,
        data_w,
        data_b,
        sizes,
        h,
        key,
        value,
        expiry,
        data_expiry,
        flags,
        version,
        emb,
    )
    if not held:
        unlock_stripe_word(stripes, stripe)
    return st


@jit
def table_put_bytes(ctx_addr, h, key, value, expiry, data_expiry, flags, version, emb):
    """:func:`table_put` for Python's ``bytes`` arguments (held by the caller for the call)."""
    k, v, e = bytes_view(key), bytes_view(value), bytes_view(emb)
    return table_put(
        ctx_addr,
        h,
        address_of(k),
        len(k),
        address_of(v),
        len(v),
        expiry,
        data_expiry,
        flags,
        version,
        address_of(e),
        len(e),
    )


@jit
def _delete_locked(ctx, hdr, stripes, stripe, slots, access, ahdr, data_w, data_b, sizes, h, key, flags):
    sb = stripe * STRIPE_WORDS
    found, _free, _tomb = _find(slots, ctx[CTX_NSLOTS_IDX] - 1, h, key, data_w, data_b, ctx[CTX_ARENA_BYTES_IDX])
    journal = (flags & J_JOURNAL) != 0
    if found < 0 and not journal:
        return NOT_FOUND
    was_expired = found >= 0 and expired(slots[found * SLOT_WORDS + SLOT_EXPIRY_IDX])
    if (flags & J_IF_EXPIRED) != 0 and not was_expired:
        return NOT_FOUND  # rewritten since the reader saw it expired: keep the new value
    old_ref = slots[found * SLOT_WORDS + SLOT_REF_IDX] if found >= 0 else 0
    begin_intent(stripes, sb, found, h, TOMB, 0, old_ref, 0)
    if journal:
        st = _journal(ctx, stripes, sb, JOURNAL_DELETE, key, key[:0], 0, key[:0])
        if st != OK:
            undo_intent(ctx, hdr, stripes, stripe, slots, ahdr, data_w, sizes)
            return st
    store_release(stripes, sb + STRIPE_PHASE_IDX, PHASE_COMMITTED)
    apply_intent(ctx, stripes, stripe, slots, ahdr, data_w, sizes)
    stripes[sb + STRIPE_VERSION_IDX] += 1
    if found < 0:
        return NOT_FOUND
    access[found] = 0
    fetch_add(hdr, HDR_COUNT_IDX, -1)
    fetch_add(hdr, HDR_TOMBS_IDX, 1)
    if was_expired:
        fetch_add(hdr, HDR_EXPIRATIONS_IDX, 1)
        return NOT_FOUND
    fetch_add(hdr, HDR_DELETES_IDX, 1)
    return OK


@jit
def table_delete(ctx_addr, h, key, flags):
    """Remove ``key`` (with J_JOURNAL: and journal the delete). Returns OK, NOT_FOUND (not in L1;
    with J_JOURNAL the delete is journaled all the same), KEY_TOO_LARGE, JOURNAL_FULL (nothing
    done), BUSY, CLOSED, CORRUPT."""
    ctx, hdr, stripes, slots, access, ahdr, data_w, data_b, sizes = table_views(ctx_addr)
    st = write_check(ctx, key, 0, flags)
    if st != OK:
        return st
    stripe = stripe_of(h, ctx[CTX_NSTRIPES_IDX])
    held = (flags & J_HELD) != 0
    if not held and not lock_stripe_word(stripes, stripe, ctx[CTX_OWNER_IDX]):
        return BUSY
    st = _delete_locked(ctx, hdr, stripes, stripe, slots, access, ahdr, data_w, data_b, sizes, h, key, flags)
    if not held:
        unlock_stripe_word(stripes, stripe)
    return st


@jit
def table_lock_stripe(ctx_addr, h):
    """Take the stripe of hash ``h`` for a multi-step write driven from Python (an embedding-log
    append that must stay ordered with the journal); then pass J_HELD. OK, BUSY or CLOSED."""
    ctx = address_to_words(ctx_addr, CTX_WORDS)
    if ctx[CTX_OPEN_IDX] != 1:
        return CLOSED
    stripes = address_to_words(ctx[CTX_STRIPES_IDX], ctx[CTX_NSTRIPES_IDX] * STRIPE_WORDS)
    return OK if lock_stripe_word(stripes, stripe_of(h, ctx[CTX_NSTRIPES_IDX]), ctx[CTX_OWNER_IDX]) else BUSY


@jit
def table_unlock_stripe(ctx_addr, h):
    ctx = address_to_words(ctx_addr, CTX_WORDS)
    stripes = address_to_words(ctx[CTX_STRIPES_IDX], ctx[CTX_NSTRIPES_IDX] * STRIPE_WORDS)
    stripe = stripe_of(h, ctx[CTX_NSTRIPES_IDX])
    if stripes[stripe * STRIPE_WORDS + STRIPE_LOCK_IDX] == ctx[CTX_OWNER_IDX]:
        unlock_stripe_word(stripes, stripe)
    return OK


@jit
def table_stripe_version(ctx_addr, h):
    """The write count of the stripe of ``h``: read it before reading a lower tier, pass it with
    J_PROMOTE to fill L1 only if nothing was written to the stripe meanwhile."""
    ctx = address_to_words(ctx_addr, CTX_WORDS)
    stripes = address_to_words(ctx[CTX_STRIPES_IDX], ctx[CTX_NSTRIPES_IDX] * STRIPE_WORDS)
    return load_acquire(stripes, stripe_of(h, ctx[CTX_NSTRIPES_IDX]) * STRIPE_WORDS + STRIPE_VERSION_IDX)


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
