"""C-ABI entry points over the kernels, for the compiled extension (nt_memory/_fastpath.c).

Every argument is an int64 (an address, a length, a duration); every result an int64 status or
value, as the kernels they wrap return. The extension calls them with the GIL held, through the
address numba gives each (:class:`nt_memory.kernels._jit.CEntry`), so a Python ``get`` costs one C
call that hashes, probes, and copies, instead of numba's dispatch of ``bytes`` arguments. These
are the same kernels ``@njit`` code calls: one copy of every algorithm.

Who may call what: the same as the kernel each one wraps (see their modules).
"""

from nt_memory.kernels._jit import CEntry, jit
from nt_memory.kernels.atomics import address_to_bytes, address_to_words, clock_ns
from nt_memory.kernels.embedlog import log_keys
from nt_memory.kernels.layout.table import CTX_BEAT_IDX, CTX_OPEN_IDX, CTX_OUT_BYTES_IDX, CTX_WORDS, PREFETCH_WRITE
from nt_memory.kernels.locktable import lock_release, lock_try_acquire
from nt_memory.kernels.ring import ring_publish, ring_receive
from nt_memory.kernels.status import CLOSED, OK, OUT_TOO_SMALL
from nt_memory.kernels.table import NO_EMBEDDING, NO_VERSION, key_hash, table_lookup, table_prefetch, table_put

_SIG5 = "int64(int64, int64, int64, int64, int64)"


def _l1_get(ctx_addr, key_addr, klen, out_addr, h_addr):
    """Hash the stored key at ``key_addr`` (``klen`` bytes), store the hash at ``h_addr`` (for the
    caller's lower tiers on a miss), and look it up into ``out_addr`` (``ctx[OUT_BYTES]`` bytes).
    Returns what ``table_lookup`` returns."""
    ctx = address_to_words(ctx_addr, CTX_WORDS)
    key = address_to_bytes(key_addr, klen)
    h = key_hash(ctx, key)
    address_to_words(h_addr, 1)[0] = h
    return table_lookup(ctx_addr, h, key, address_to_bytes(out_addr, ctx[CTX_OUT_BYTES_IDX]), True)


@jit
def _expiries(now, l1_ttl_ns, data_ttl_ns):
    """``(L1 expiry, data expiry)`` of a put at ``now`` from its durations (0 = none): the value's
    stay in L1 is bounded by its data expiry."""
    data_expiry = now + data_ttl_ns if data_ttl_ns > 0 else 0
    expiry = now + l1_ttl_ns if l1_ttl_ns > 0 else 0
    if data_expiry != 0 and (expiry == 0 or data_expiry < expiry):
        expiry = data_expiry
    return expiry, data_expiry


@jit
def _beat(ctx, now):
    """Refresh this member's heartbeat, at most once a second (one load when it is fresh)."""
    if ctx[CTX_BEAT_IDX] != 0:
        beat = address_to_words(ctx[CTX_BEAT_IDX], 1)
        if now - beat[0] > 1_000_000_000:
            beat[0] = now


def _l1_put(ctx_addr, key_addr, klen, val_addr, vlen, l1_ttl_ns, data_ttl_ns, flags):
    """Store the encoded value at ``val_addr`` under the stored key at ``key_addr``. Expiries are
    computed here from the durations (0 = none): the value's stay in L1 is bounded by its data
    expiry. Returns what ``table_put`` returns (nothing is stored unless OK)."""
    ctx = address_to_words(ctx_addr, CTX_WORDS)
    if ctx[CTX_OPEN_IDX] != 1:
        return CLOSED  # before the heartbeat: a closed handle's member words may be unmapped
    now = clock_ns()
    expiry, data_expiry = _expiries(now, l1_ttl_ns, data_ttl_ns)
    _beat(ctx, now)
    h = key_hash(ctx, address_to_bytes(key_addr, klen))
    return table_put(
        ctx_addr, h, key_addr, klen, val_addr, vlen, expiry, data_expiry, flags, NO_VERSION, NO_EMBEDDING, NO_EMBEDDING
    )


PREFETCH_AHEAD = 8  # a batch get fetches this many keys ahead: its slot, then its block halfway


def _l1_get_many(ctx_addr, keys_addr, ends_addr, first, n, out_addr, out_len, res_addr):
    """:func:`_l1_get` for keys ``first`` to ``n - 1`` of a batch, in one call: the stored keys lie
    back to back at ``keys_addr``, key ``i`` ending at byte ``ends[i]``. Values are copied into
    ``out`` one after another (each from an 8-byte boundary); ``res[2i]`` is what ``table_lookup``
    returned for key ``i`` and ``res[2i + 1]`` its hash. Returns the index of the first key not
    looked up: ``n``, or one whose value did not fit in what was left of ``out`` (the caller takes
    the values out and calls again from there). Keys are hashed PREFETCH_AHEAD ahead of their
    lookup and their slots and blocks prefetched (:func:`table_prefetch`), so a batch over a table
    larger than the caches waits for several misses at once rather than one after another."""
    ctx = address_to_words(ctx_addr, CTX_WORDS)
    ends = address_to_words(ends_addr, n)
    res = address_to_words(res_addr, 2 * n)
    hashes = res[1::2]
    _prime(ctx_addr, ctx, keys_addr, ends, hashes, first, n, 0)
    pos = 0
    for i in range(first, n):
        _ahead(ctx_addr, ctx, keys_addr, ends, hashes, i, n, 0)
        start = 0 if i == 0 else ends[i - 1]
        key = address_to_bytes(keys_addr + start, ends[i] - start)
        r = table_lookup(ctx_addr, hashes[i], key, address_to_bytes(out_addr + pos, out_len - pos), True)
        if r == OUT_TOO_SMALL and pos > 0:
            return i
        res[2 * i] = r
        if r >= 0:
            pos += ((r >> 8) + 7) & ~7
    return n


@jit(inline="always")
def _hash_for(ctx_addr, ctx, keys_addr, ends, hashes, j, stage):
    """Hash key ``j`` of a batch (keys back to back, key ``j`` ending at ``ends[j]``) into
    ``hashes[j]`` and prefetch for it (``table_prefetch`` stage 0, or PREFETCH_WRITE)."""
    start = 0 if j == 0 else ends[j - 1]
    hashes[j] = key_hash(ctx, address_to_bytes(keys_addr + start, ends[j] - start))
    table_prefetch(ctx_addr, hashes[j], stage)


@jit(inline="always")
def _prime(ctx_addr, ctx, keys_addr, ends, hashes, first, n, stage):
    """Start a batch's prefetch pipeline: the first PREFETCH_AHEAD keys hashed and their slots
    fetched, the first half of them their blocks too."""
    for j in range(first, min(n, first + PREFETCH_AHEAD)):
        _hash_for(ctx_addr, ctx, keys_addr, ends, hashes, j, stage)
    for j in range(first, min(n, first + PREFETCH_AHEAD // 2)):
        table_prefetch(ctx_addr, hashes[j], 1)


@jit(inline="always")
def _ahead(ctx_addr, ctx, keys_addr, ends, hashes, i, n, stage):
    """Before key ``i`` of a batch: fetch the block of key ``i + PREFETCH_AHEAD / 2`` (hashed
    earlier) and hash key ``i + PREFETCH_AHEAD``, fetching its slot."""
    if i + PREFETCH_AHEAD // 2 < n:
        table_prefetch(ctx_addr, hashes[i + PREFETCH_AHEAD // 2], 1)
    if i + PREFETCH_AHEAD < n:
        _hash_for(ctx_addr, ctx, keys_addr, ends, hashes, i + PREFETCH_AHEAD, stage)


def _l1_put_many(
    ctx_addr, keys_addr, key_ends_addr, vals_addr, val_ends_addr, n, l1_ttl_ns, data_ttl_ns, flags, hashes_addr
):
    """:func:`_l1_put` for ``n`` encoded values (back to back at ``vals_addr``, value ``i`` ending at
    byte ``val_ends[i]``) under ``n`` stored keys (likewise), in order, in one call, all with the
    same expiries. Returns how many were stored: ``n``, or the index of the first one
    ``table_put`` did not store (a busy stripe, a full journal, a rehash due, a closed handle),
    from which the caller's slow path goes on and reports or waits. ``hashes_addr``: room for ``n``
    words, where keys are hashed PREFETCH_AHEAD ahead of their put (see :func:`_l1_get_many`)."""
    ctx = address_to_words(ctx_addr, CTX_WORDS)
    if ctx[CTX_OPEN_IDX] != 1:
        return 0  # before the heartbeat: a closed handle's member words may be unmapped
    key_ends = address_to_words(key_ends_addr, n)
    val_ends = address_to_words(val_ends_addr, n)
    now = clock_ns()
    expiry, data_expiry = _expiries(now, l1_ttl_ns, data_ttl_ns)
    _beat(ctx, now)
    hashes = address_to_words(hashes_addr, n)
    _prime(ctx_addr, ctx, keys_addr, key_ends, hashes, 0, n, PREFETCH_WRITE)
    for i in range(n):
        _ahead(ctx_addr, ctx, keys_addr, key_ends, hashes, i, n, PREFETCH_WRITE)
        kstart = 0 if i == 0 else key_ends[i - 1]
        vstart = 0 if i == 0 else val_ends[i - 1]
        st = table_put(
            ctx_addr,
            hashes[i],
            keys_addr + kstart,
            key_ends[i] - kstart,
            vals_addr + vstart,
            val_ends[i] - vstart,
            expiry,
            data_expiry,
            flags,
            NO_VERSION,
            NO_EMBEDDING,
            NO_EMBEDDING,
        )
        if st != OK:
            return i
    return n


def _lock_try(slot_addr, ctl_addr, h, owner, lease_ns):
    """One try: fence, BUSY, NOT_FOUND or RESERVE."""
    return lock_try_acquire(slot_addr, ctl_addr, h, owner, lease_ns)


def _lock_release(slot_addr, h, owner, fence):
    return lock_release(slot_addr, h, owner, fence)


def _ring_receive(hdr_addr, data_addr, cap, state_addr, out_addr, out_bytes):
    """One receive for a subscriber whose state is at ``state_addr`` (int64 words: 0 cursor, 1 last
    message number seen): advances the cursor and stores the message number in word 1. Returns the
    message length or NOT_FOUND / OUT_TOO_SMALL."""
    state = address_to_words(state_addr, 2)
    n, cursor, msg_no = ring_receive(hdr_addr, data_addr, cap, state[0], address_to_bytes(out_addr, out_bytes))
    state[0] = cursor
    state[1] = msg_no
    return n


def _ring_publish(hdr_addr, data_addr, cap, owner, msg_addr, msg_len):
    return ring_publish(hdr_addr, data_addr, cap, owner, address_to_bytes(msg_addr, msg_len))


def _log_keys(bases, sizes, firsts, nchunks, per_chunk, headers_off, header_bytes, rids, n, out, out_len, ends):
    """``log_keys`` over the chunk arrays at ``bases``/``sizes``/``firsts`` (``nchunks`` int64
    each), ``n`` record ids at ``rids``, the keys into ``out`` (``out_len`` bytes), their ends at
    ``ends``."""
    return log_keys(
        address_to_words(bases, nchunks),
        address_to_words(sizes, nchunks),
        address_to_words(firsts, nchunks),
        nchunks,
        per_chunk,
        headers_off,
        header_bytes,
        address_to_words(rids, n),
        address_to_bytes(out, out_len),
        address_to_words(ends, n),
    )


L1_GET = CEntry(_l1_get, _SIG5)
L1_PUT = CEntry(_l1_put, "int64(int64, int64, int64, int64, int64, int64, int64, int64)")
L1_GET_MANY = CEntry(_l1_get_many, "int64(int64, int64, int64, int64, int64, int64, int64, int64)")
L1_PUT_MANY = CEntry(_l1_put_many, f"int64({', '.join(['int64'] * 10)})")
LOCK_TRY = CEntry(_lock_try, _SIG5)
LOCK_RELEASE = CEntry(_lock_release, "int64(int64, int64, int64, int64)")
RING_RECEIVE = CEntry(_ring_receive, "int64(int64, int64, int64, int64, int64, int64)")
RING_PUBLISH = CEntry(_ring_publish, "int64(int64, int64, int64, int64, int64, int64)")
LOG_KEYS = CEntry(_log_keys, f"int64({', '.join(['int64'] * 12)})")
