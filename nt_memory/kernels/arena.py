"""A size-class arena: lock-free allocation of variable-size blocks inside one shared segment.

Any number of processes may allocate and free concurrently. Fresh space comes from a bump pointer
(one fetch-add); freed blocks go to one Treiber stack per size class, whose head word carries a
32-bit tag against ABA. Blocks are never split or merged, so an offset that was once a block start
stays one: a reader holding a stale reference always lands on a block header, never mid-block.

Arena header (int64 words; hot words on their own 64-byte lines)::

    word  0  DATA_BYTES      bytes in the data region
    word  1  NCLASSES        number of size classes in use (<= 64)
    word  8  BUMP            next never-used byte offset (fetch-add)
    word 16  USED_BYTES      bytes held by live blocks (statistics)
    word 17, 18              unused (allocation and free counts that nothing read: two locked
                             instructions in every put)
    word 24  CLASS_SIZE[64]  block size of each class, ascending, header included
    word 88  FREE_HEAD[c]    at 88 + 8*c: tag << 32 | (offset >> 4) of the top free block, 0 = empty

Every kernel here takes the data region's size and the class sizes from the caller's *private*
copy, validated when the segment was attached (``arena_sizes``), never from the shared header: a
co-tenant that rewrites a header word can make allocations fail or collide, never make a kernel
load or store outside the mapping.

Block (16-byte aligned, offset 0 is never a block, so a unit index of 0 means "none")::

    +0   gen (low 32 bits) | class << 32     gen grows on every free: stale references fail
    +8   key_len (low 32)  | val_len << 32   written by the allocating writer before publishing
    +16  payload (value bytes, then key bytes); while free, its first word links the next free block

A reference is ``(gen & 0xFFFFFF) << 40 | offset >> 4``; it is never 0 because offset >= 16.
"""

from nt_memory.kernels._jit import jit
from nt_memory.kernels.atomics import cas, copy_bytes, fetch_add, load_acquire
from nt_memory.kernels.layout.arena import (
    ARENA_BUMP_IDX,
    ARENA_CLASS_SIZE_IDX,
    ARENA_DATA_BYTES_IDX,
    ARENA_FREE_HEAD_IDX,
    ARENA_FREE_HEAD_STRIDE,
    ARENA_HDR_WORDS,
    ARENA_NCLASSES_IDX,
    ARENA_USED_BYTES_IDX,
    BLOCK_HDR_BYTES,
    CLASS_FALLBACK,
    FIRST_BLOCK_OFFSET,
    class_sizes,
)
from nt_memory.kernels.status import CORRUPT, FULL, OK

_U32 = 0xFFFFFFFF
_GEN_MASK = 0xFFFFFF
_REF_OFFSET_MASK = (1 << 40) - 1


@jit(inline="always")
def ref_offset(ref):
    return (ref & _REF_OFFSET_MASK) << 4


@jit(inline="always")
def ref_gen(ref):
    return (ref >> 40) & _GEN_MASK


@jit(inline="always")
def make_ref(gen, offset):
    return ((gen & _GEN_MASK) << 40) | (offset >> 4)


@jit(inline="always")
def arena_class_for(sizes, nbytes):
    """The smallest class (index into the private ``sizes``) whose blocks hold ``nbytes`` (header
    included), or -1 if none does."""
    n = len(sizes)
    lo = 0
    hi = n
    while lo < hi:
        mid = (lo + hi) >> 1
        if sizes[mid] < nbytes:
            lo = mid + 1
        else:
            hi = mid
    return lo if lo < n else -1


@jit(inline="always")
def arena_block_ok(data_bytes, ref):
    """True when ``ref`` points at a block header that lies inside the data region."""
    off = ref_offset(ref)
    return off >= FIRST_BLOCK_OFFSET and off + BLOCK_HDR_BYTES <= data_bytes


@jit(inline="always")
def arena_block(data_w, data_bytes, ref):
    """(payload offset, value length, key length) of the live block ``ref`` names, or (-1, 0, 0)
    when the reference is outside the region, its generation has moved on, or the lengths in the
    block header run past the region. Any caller; the lengths may be torn unless the caller holds
    the block's writer out (seqlock readers re-validate after copying)."""
    if not arena_block_ok(data_bytes, ref):
        return -1, 0, 0
    off = ref_offset(ref)
    if (data_w[off >> 3] & _GEN_MASK) != ref_gen(ref):
        return -1, 0, 0
    w1 = data_w[(off >> 3) + 1]
    vlen = (w1 >> 32) & _U32
    klen = w1 & _U32
    if off + BLOCK_HDR_BYTES + vlen + klen > data_bytes:
        return -1, 0, 0
    return off + BLOCK_HDR_BYTES, vlen, klen


@jit
def arena_alloc(hdr, data, nbytes, data_bytes, sizes):
    """Allocate a block for ``nbytes`` of payload. Many callers, lock-free.

    ``hdr`` is the arena header words, ``data`` the data region as int64 words, ``data_bytes`` and
    ``sizes`` the private copies of its size and class sizes. Returns a reference (> 0), FULL when
    no class that fits has a block, or CORRUPT on an impossible free-list link or bump pointer.
    The block's key/value lengths are left for the caller to write.
    """
    need = nbytes + BLOCK_HDR_BYTES
    c = arena_class_for(sizes, need)
    if c < 0:
        return FULL
    ncls = len(sizes)
    last = min(c + CLASS_FALLBACK, ncls - 1)
    for cc in range(c, last + 1):
        head_idx = ARENA_FREE_HEAD_IDX + ARENA_FREE_HEAD_STRIDE * cc
        while True:
            head = load_acquire(hdr, head_idx)
            unit = head & _U32
            if unit == 0:
                break
            off = unit << 4
            if off < FIRST_BLOCK_OFFSET or off + 3 * 8 > data_bytes:
                return CORRUPT
            # May be garbage if another allocator popped this block meanwhile; then the tagged
            # CAS below fails and the value is never used.
            nxt = data[(off >> 3) + 2] & _U32
            new_head = ((((head >> 32) + 1) & _U32) << 32) | nxt
            if cas(hdr, head_idx, head, new_head) == head:
                if off + sizes[cc] > data_bytes:
                    return CORRUPT
                fetch_add(hdr, ARENA_USED_BYTES_IDX, sizes[cc])
                # The block keeps its class: a free list of one class holds only blocks of it,
                # unless the shared words were rewritten, which the class check below refuses.
                if ((data[off >> 3] >> 32) & 0xFFFF) != cc:
                    return CORRUPT
                return make_ref(data[off >> 3] & _U32, off)
        if cc == c:
            size = sizes[c]
            off = fetch_add(hdr, ARENA_BUMP_IDX, size)
            if off >= FIRST_BLOCK_OFFSET and off + size <= data_bytes:
                data[off >> 3] = 1 | (c << 32)
                fetch_add(hdr, ARENA_USED_BYTES_IDX, size)
                return make_ref(1, off)
    return FULL


@jit(inline="always")  # as a call (three arrays passed): 58 more instructions per put under callgrind
def arena_free(hdr, data, ref, data_bytes, sizes):
    """Return the block of ``ref`` to its class's free list. Many callers, lock-free, idempotent.

    Freeing a reference whose generation is already past (freed before, maybe reused since) does
    nothing: crash recovery may replay a free. Returns OK, or CORRUPT for an impossible reference.
    """
    if not arena_block_ok(data_bytes, ref):
        return CORRUPT
    off = ref_offset(ref)
    w = load_acquire(data, off >> 3)
    c = (w >> 32) & 0xFFFF
    if c >= len(sizes) or off + sizes[c] > data_bytes:
        return CORRUPT
    gen = w & _U32
    if (gen & _GEN_MASK) != ref_gen(ref):
        return OK
    new_gen = (gen + 1) & _U32
    if new_gen == 0:
        new_gen = 1
    if cas(data, off >> 3, w, new_gen | (c << 32)) != w:
        return OK  # someone else freed it first
    head_idx = ARENA_FREE_HEAD_IDX + ARENA_FREE_HEAD_STRIDE * c
    while True:
        head = load_acquire(hdr, head_idx)
        data[(off >> 3) + 2] = head & _U32
        new_head = ((((head >> 32) + 1) & _U32) << 32) | (off >> 4)
        if cas(hdr, head_idx, head, new_head) == head:
            break
    fetch_add(hdr, ARENA_USED_BYTES_IDX, -sizes[c])
    return OK


@jit(inline="always")
def write_bytes(dst, off, src):
    """Copy ``src`` (bytes or uint8 array) into ``dst`` at ``off``; returns the offset after it.
    Caller: the exclusive writer of that region, with the bounds already checked."""
    copy_bytes(dst, off, src, 0, len(src))
    return off + len(src)


def arena_init(hdr, data_bytes, max_block_bytes):
    """Lay out a fresh arena header (creator only, before the segment is published)."""
    sizes = class_sizes(max_block_bytes)
    hdr[:ARENA_HDR_WORDS] = 0
    hdr[ARENA_DATA_BYTES_IDX] = data_bytes
    hdr[ARENA_NCLASSES_IDX] = len(sizes)
    hdr[ARENA_CLASS_SIZE_IDX : ARENA_CLASS_SIZE_IDX + len(sizes)] = sizes
    hdr[ARENA_BUMP_IDX] = FIRST_BLOCK_OFFSET
