"""A private open-addressing map from a key's 128-bit hash to an id (the embedding log's "latest
record of each key", tiers/l2.py): three int64 arrays instead of a dict of tuples and bytes, 24
bytes a slot against ~170 per entry.

``lo`` and ``hi`` are the hash's two halves, ``vals`` the id + 1: 0 is an empty slot, -1 a
tombstone. Linear probing from ``lo & mask``; the arrays' length is a power of two and the caller
keeps them under 70% full (live plus tombstones), so a probe always ends.
"""

from nt_memory.kernels._jit import jit

EMPTY = 0
TOMBSTONE = -1


@jit
def _find(lo, hi, vals, klo, khi):
    """The slot holding the hash (klo, khi), or -1."""
    mask = len(vals) - 1
    i = klo & mask
    for _ in range(len(vals)):
        v = vals[i]
        if v == EMPTY:
            return -1
        if v > 0 and lo[i] == klo and hi[i] == khi:
            return i
        i = (i + 1) & mask
    return -1


@jit
def idmap_get(lo, hi, vals, klo, khi):
    """The id stored for the hash (klo, khi), or -1."""
    i = _find(lo, hi, vals, klo, khi)
    return vals[i] - 1 if i >= 0 else -1


@jit
def idmap_put(lo, hi, vals, klo, khi, ident):
    """Store ``ident`` for the hash. Returns 0 if it replaced the hash's entry, 1 if it took a
    never-used slot, 2 if it reused a tombstone."""
    mask = len(vals) - 1
    i = klo & mask
    tomb = -1
    for _ in range(len(vals)):
        v = vals[i]
        if v == EMPTY:
            if tomb >= 0:
                i = tomb
            lo[i] = klo
            hi[i] = khi
            vals[i] = ident + 1
            return 1 if tomb < 0 else 2
        if v == TOMBSTONE:
            if tomb < 0:
                tomb = i
        elif lo[i] == klo and hi[i] == khi:
            vals[i] = ident + 1
            return 0
        i = (i + 1) & mask
    if tomb >= 0:  # every slot visited (the caller's load bound makes this unreachable)
        lo[tomb] = klo
        hi[tomb] = khi
        vals[tomb] = ident + 1
        return 2
    return -1


@jit
def idmap_delete(lo, hi, vals, klo, khi):
    """Remove the hash's entry; returns 1 if there was one."""
    i = _find(lo, hi, vals, klo, khi)
    if i < 0:
        return 0
    vals[i] = TOMBSTONE
    return 1


@jit
def idmap_move(lo, hi, vals, new_lo, new_hi, new_vals):
    """Insert every live entry into the (empty) new arrays; returns how many."""
    n = 0
    for i in range(len(vals)):
        if vals[i] > 0:
            idmap_put(new_lo, new_hi, new_vals, lo[i], hi[i], vals[i] - 1)
            n += 1
    return n
