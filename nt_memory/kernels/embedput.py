"""A put with an embedding in one call: L1 and the journal, then the embedding log's record.

``MemorySystem.put(..., embedding=...)`` holds the key's L1 stripe and the log's append lock across
the journal append and the log append, so that per key the log's order is the journal's. Driven
from Python that is about ten calls into compiled code; this kernel makes it one, for the common
case: both locks free at the first try, this process's latest-id map up to date with the log, and
room in the chunk it has mapped last. Anything else returns a negative status with nothing done,
and the caller takes the general path (``tiers/l2.py``: ``VectorTier.reserve``), which waits,
recovers dead holders, maps or creates chunks and syncs; so a kill at any point leaves what a kill
at the same point of that path leaves.

The steps, in the general path's order: take the stripe, take the log lock, check COUNT against the
latest-id map and the chunk's room, write L1 and the journal (``table.py``'s put, stripe held),
write and publish the log record (``embedlog.log_write``), note the key's new latest record, release
the log lock, release the stripe.

``lctx`` is the caller's private context (int64 words, ``LC_*``): where the log's shared words are,
the chunk it has mapped last, the layout's offsets and this process's latest-id map. It is written
by ``tiers/l2.py`` and read here; the kernel writes back only ``LC_LATEST_UPTO``.
"""

from nt_memory.kernels._jit import jit
from nt_memory.kernels.atomics import address_to_words, bytes_view, load_acquire
from nt_memory.kernels.embedlog import log_write
from nt_memory.kernels.idmap import idmap_get, idmap_put
from nt_memory.kernels.layout.embedlog import FIRST_ID_WORD, KEY_BUMP_WORD, REC_PUT, RECORD_HDR_BYTES
from nt_memory.kernels.layout.embedput import (
    LC_CHUNK_ADDR,
    LC_CHUNK_NO,
    LC_CHUNK_RECORDS,
    LC_CHUNK_SIZE,
    LC_COUNT_ADDR,
    LC_HEADERS_OFF,
    LC_IDS_HI,
    LC_IDS_LEN,
    LC_IDS_LO,
    LC_IDS_VALS,
    LC_KEYS_END,
    LC_KEYS_OFF,
    LC_LATEST_UPTO,
    LC_LOCK_ADDR,
    LC_NCHUNKS_ADDR,
    LC_OWNER,
    LC_VEC_BYTES,
    LC_VECTORS_OFF,
    LC_WORDS,
    LC_WORDS_OFF,
    SLOW_PATH,
)
from nt_memory.kernels.layout.table import CTX_NSTRIPES_IDX, CTX_OWNER_IDX, J_HELD
from nt_memory.kernels.lockword import lockword_release, lockword_try_acquire
from nt_memory.kernels.status import BUSY, OK
from nt_memory.kernels.table import (
    NO_VERSION,
    address_of,
    stripe_of,
    table_put,
    table_views,
    try_lock_stripe_word,
    unlock_stripe_word,
    write_check,
)


@jit
def put_with_embedding(tctx_addr, h, key, value, expiry, data_expiry, flags, emb, lctx_addr, klo, khi):
    """:func:`table_put` of ``key`` -> ``value`` with embedding ``emb`` (bytes) and the log's PUT
    record of ``key`` with vector bytes ``emb`` (``klo``/``khi``: the key's 128-bit hash in the
    latest-id map), under the stripe and the log lock. Returns 1 + idmap_put's answer (1: the key
    was known, 2: a new slot, 3: a reused tombstone; 0: the map was full, which its owner's load
    bound rules out) when both are stored; SLOW_PATH or
    the put's status (BUSY, JOURNAL_FULL, NEEDS_REHASH, ...) with nothing stored, or CORRUPT
    after the put if the log's record could not be written (the general path then raises)."""
    key, value, emb = bytes_view(key), bytes_view(value), bytes_view(emb)  # the types table_put has
    lctx = address_to_words(lctx_addr, LC_WORDS)
    ctx, _, stripes = table_views(tctx_addr)[:3]
    st = write_check(ctx, key, len(value), flags)
    if st != OK:
        return st
    if lctx[LC_CHUNK_NO] < 0 or len(emb) != lctx[LC_VEC_BYTES]:
        return SLOW_PATH
    stripe = stripe_of(h, ctx[CTX_NSTRIPES_IDX])
    if not try_lock_stripe_word(stripes, stripe, ctx[CTX_OWNER_IDX]):
        return BUSY
    lock = address_to_words(lctx[LC_LOCK_ADDR], 1)
    if not lockword_try_acquire(lock, 0, lctx[LC_OWNER]):
        unlock_stripe_word(stripes, stripe)
        return BUSY
    rid = load_acquire(address_to_words(lctx[LC_COUNT_ADDR], 1), 0)
    within = -1  # out of range unless the checks below pass
    if rid == lctx[LC_LATEST_UPTO] and load_acquire(address_to_words(lctx[LC_NCHUNKS_ADDR], 1), 0) == (
        lctx[LC_CHUNK_NO] + 1
    ):
        words = address_to_words(lctx[LC_CHUNK_ADDR] + lctx[LC_WORDS_OFF], KEY_BUMP_WORD + 1)
        bump = words[KEY_BUMP_WORD]
        if lctx[LC_KEYS_OFF] <= bump and bump + len(key) <= lctx[LC_KEYS_END]:
            within = rid - words[FIRST_ID_WORD]
    if not 0 <= within < lctx[LC_CHUNK_RECORDS]:
        st = SLOW_PATH  # another process appended, or the chunk is full (or damaged): sync or map
    else:
        # The one compiled table_put, as its stripe's holder (J_HELD).
        st = table_put(
            tctx_addr,
            h,
            address_of(key),
            len(key),
            address_of(value),
            len(value),
            expiry,
            data_expiry,
            flags | J_HELD,
            NO_VERSION,
            address_of(emb),
            len(emb),
        )
    if st == OK:
        n = lctx[LC_IDS_LEN]
        lo = address_to_words(lctx[LC_IDS_LO], n)
        hi = address_to_words(lctx[LC_IDS_HI], n)
        vals = address_to_words(lctx[LC_IDS_VALS], n)
        st = log_write(
            lctx[LC_CHUNK_ADDR],
            lctx[LC_CHUNK_SIZE],
            lctx[LC_WORDS_OFF],
            lctx[LC_KEYS_OFF],
            lctx[LC_KEYS_END],
            lctx[LC_HEADERS_OFF] + within * RECORD_HDR_BYTES,
            lctx[LC_VECTORS_OFF] + within * lctx[LC_VEC_BYTES],
            lctx[LC_VEC_BYTES],
            lctx[LC_COUNT_ADDR],
            rid,
            REC_PUT,
            idmap_get(lo, hi, vals, klo, khi),
            key,
            emb,
        )
        if st == OK:
            st = 1 + idmap_put(lo, hi, vals, klo, khi, rid)
            lctx[LC_LATEST_UPTO] = rid + 1
    lockword_release(lock, 0)
    unlock_stripe_word(stripes, stripe)
    return st
