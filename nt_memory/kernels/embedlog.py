"""The embedding log's append: one record written and published in one call.

The layout is shm/embed_layout.py's. The caller holds the log's append lock and passes what it
knows privately (the chunk's mapping, its size, where its words, key area and record lie); the one
shared word trusted here, the chunk's KEY_BUMP, is checked against the key area first, so a
co-tenant that rewrites it gets CORRUPT back, never a store outside the chunk.
"""

import numpy as np

from nt_memory.kernels._jit import jit
from nt_memory.kernels.atomics import address_to_bytes, address_to_words, copy_bytes, store_release
from nt_memory.kernels.layout.embedlog import KEY_BUMP_WORD, REC_PUT, RECORD_HDR_BYTES
from nt_memory.kernels.status import CORRUPT, FULL, OK


@jit(allocates=True)  # its record header is composed in a small array
def log_write(
    seg_addr,
    seg_size,
    words_off,
    keys_off,
    keys_end,
    hdr_off,
    vec_off,
    vec_bytes,
    count_addr,
    rid,
    kind,
    prev_id,
    kb,
    vec,
):
    """Write record ``rid`` (``kind`` PUT or DELETE, superseding ``prev_id``, -1 for none) into the
    chunk mapped at ``seg_addr``: the key ``kb`` at the chunk's KEY_BUMP, the header at byte
    ``hdr_off``, the vector bytes ``vec`` at ``vec_off`` (a slot of ``vec_bytes``; empty: left as
    it is); then publish COUNT = rid + 1 (release), so a reader that sees the count sees the whole
    record. Returns OK or CORRUPT (nothing written)."""
    klen = len(kb)
    words = address_to_words(seg_addr + words_off, KEY_BUMP_WORD + 1)
    koff = words[KEY_BUMP_WORD]
    if not (keys_off <= koff and koff + klen <= keys_end and keys_end <= seg_size):
        return CORRUPT
    if hdr_off < 0 or hdr_off + RECORD_HDR_BYTES > keys_off:
        return CORRUPT
    if vec_off < 0 or vec_off + vec_bytes > keys_off or len(vec) > vec_bytes:
        return CORRUPT
    buf = address_to_bytes(seg_addr, seg_size)
    copy_bytes(buf, koff, kb, 0, klen)
    words[KEY_BUMP_WORD] = koff + klen
    head = np.empty(4, np.int64)
    head[0] = kind | (klen << 32)
    head[1] = koff
    head[2] = prev_id + 1
    head[3] = 0
    copy_bytes(buf, hdr_off, head.view(np.uint8), 0, RECORD_HDR_BYTES)
    if len(vec):
        copy_bytes(buf, vec_off, vec, 0, len(vec))
    store_release(address_to_words(count_addr, 1), 0, rid + 1)
    return OK


@jit
def log_keys(bases, sizes, first_ids, nchunks, per_chunk, headers_off, header_bytes, rids, out, ends):
    """Copy the keys of PUT records ``rids`` (committed: below COUNT) into ``out``, back to back,
    ``ends[j]`` the end of key ``j``: a search's hits, in one call. Chunk ``i`` is mapped at
    ``bases[i]`` (``sizes[i]`` bytes), starts at record ``first_ids[i]`` (ascending) and keeps its
    record headers from ``headers_off``, ``header_bytes`` apart. Every
    shared word is checked before it is used: CORRUPT for an impossible record, FULL (``ends[-1]``
    the bytes needed) when ``out`` is too small; OK."""
    pos = 0
    full = False
    for j in range(len(rids)):
        rid = rids[j]
        lo, hi = 0, nchunks
        while lo < hi:
            mid = (lo + hi) // 2
            if first_ids[mid] <= rid:
                lo = mid + 1
            else:
                hi = mid
        i = lo - 1
        if i < 0 or rid - first_ids[i] >= per_chunk:
            return CORRUPT
        rec = address_to_words(bases[i] + headers_off + (rid - first_ids[i]) * header_bytes, 3)
        kind, klen = rec[0] & 0xFFFFFFFF, (rec[0] >> 32) & 0xFFFFFFFF
        koff, prev1 = rec[1], rec[2]
        if kind != REC_PUT or koff < 0 or koff > sizes[i] - klen or prev1 < 0 or prev1 > rid:
            return CORRUPT
        if pos + klen <= len(out):
            copy_bytes(out, pos, address_to_bytes(bases[i], sizes[i]), koff, klen)
        else:
            full = True
        pos += klen
        ends[j] = pos
    return FULL if full else OK


@jit
def all_finite(vec):
    """Every component of a float32 vector is finite (an embedding's check, ~0.3 us a call)."""
    for i in range(len(vec)):
        if not np.isfinite(vec[i]):
            return False
    return True
