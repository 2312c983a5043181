"""Repair and compaction of the L1 table: replaying a dead writer's intents, and the rehash.

Who may call what:

- :func:`table_recover`: any process that found (through the member table) that ``dead_owner`` is
  dead. It first takes the journal's append lock (stealing it if the dead owner held it), then
  takes every stripe the dead owner held, finishes or undoes its intents, resumes its rehash if it
  was rehashing, and releases. Holding the append lock makes a PREPARED intent decidable: nobody
  appends during the replay, so if the dead owner held the lock its record was published iff TAIL
  passed the intent's JPOS, and if it did not its append had finished (kernels/journal.py,
  ``journal_published``). It also serialises recoverers: a stripe of a dead owner is only ever
  taken under the append lock. No other code frees a dead owner's journal append lock. Having
  replayed a stripe it marks the counters (RECOUNT): the dead writer may have stopped between a
  slot write and the counter update.
- :func:`table_recount`: any writer, after a recovery (the Python side's ``HotCache.recover``
  runs it): holds every stripe, counts the slots and clears the mark.
- :func:`table_rehash`: any writer; holds every stripe, makes the table sequence odd (readers that
  miss retry) and compacts tombstones in place, one logged move at a time, so it can be resumed
  after a crash. It makes the counters exact too.
"""

import numpy as np

from nt_memory.kernels._jit import jit
from nt_memory.kernels.arena import arena_free
from nt_memory.kernels.atomics import address_to_words, fetch_add, load_acquire, store_release
from nt_memory.kernels.journal import journal_published
from nt_memory.kernels.layout.ring import RING_LOCK_IDX
from nt_memory.kernels.layout.table import (
    ALL_STRIPES,
    CTX_ARENA_BYTES_IDX,
    CTX_JOURNAL_IDX,
    CTX_NSLOTS_IDX,
    CTX_NSTRIPES_IDX,
    CTX_OPEN_IDX,
    CTX_OWNER_IDX,
    EMPTY,
    EVICT_ATTEMPTS,
    HDR_COUNT_IDX,
    HDR_MAX_ENTRIES_IDX,
    HDR_MOVE_DST_IDX,
    HDR_MOVE_SRC_IDX,
    HDR_RECOUNT_IDX,
    HDR_REHASH_ACTIVE_IDX,
    HDR_REHASH_OWNER_IDX,
    HDR_REHASH_P0_IDX,
    HDR_REHASH_POS_IDX,
    HDR_REHASHES_IDX,
    HDR_REPAIRS_IDX,
    HDR_TABLE_SEQ_IDX,
    HDR_TOMBS_IDX,
    PHASE_COMMITTED,
    PHASE_PREPARED,
    RESERVED_HASHES,
    SLOT_HASH_IDX,
    SLOT_REF_IDX,
    SLOT_WORDS,
    STRIPE_JPOS_IDX,
    STRIPE_LOCK_IDX,
    STRIPE_NEW_REF_IDX,
    STRIPE_PHASE_IDX,
    STRIPE_SLOT_IDX,
    STRIPE_VERSION_IDX,
    STRIPE_WORDS,
)
from nt_memory.kernels.lockword import lockword_steal
from nt_memory.kernels.ring import ring_lock, ring_unlock
from nt_memory.kernels.status import BUSY, CLOSED, OK
from nt_memory.kernels.table import (
    apply_intent,
    evict_one,
    journal_views,
    lock_stripe_word,
    table_views,
    undo_intent,
    unlock_stripe_word,
    write_slot,
)


@jit
def _replay_intent(ctx, hdr, stripes, stripe, slots, ahdr, data_w, sizes, dead_held_journal):
    """Finish or undo what the dead holder of ``stripe`` was doing (caller now holds the stripe,
    and the journal's append lock if there is a journal)."""
    sb = stripe * STRIPE_WORDS
    phase = load_acquire(stripes, sb + STRIPE_PHASE_IDX)
    if phase == PHASE_PREPARED:
        jhdr, jw, jb, cap = journal_views(ctx)
        jpos = stripes[sb + STRIPE_JPOS_IDX]
        if ctx[CTX_JOURNAL_IDX] != 0 and journal_published(jhdr, jpos, dead_held_journal):
            # The journal (hence L3) has the write: L1 must show it too.
            slot = stripes[sb + STRIPE_SLOT_IDX]
            if not 0 <= slot < ctx[CTX_NSLOTS_IDX] and stripes[sb + STRIPE_NEW_REF_IDX] != 0:
                arena_free(ahdr, data_w, stripes[sb + STRIPE_NEW_REF_IDX], ctx[CTX_ARENA_BYTES_IDX], sizes)
                stripes[sb + STRIPE_NEW_REF_IDX] = 0
            phase = PHASE_COMMITTED
        else:
            undo_intent(ctx, hdr, stripes, stripe, slots, ahdr, data_w, sizes)
    if phase == PHASE_COMMITTED:
        apply_intent(ctx, stripes, stripe, slots, ahdr, data_w, sizes)
    # A promotion that read a lower tier before this write must not land over it.
    stripes[sb + STRIPE_VERSION_IDX] += 1


@jit
def _move_slot(slots, access, src, dst):
    sbase = src * SLOT_WORDS
    dbase = dst * SLOT_WORDS
    write_slot(slots, dbase, slots[sbase + SLOT_HASH_IDX], slots[sbase + SLOT_REF_IDX], slots[sbase + 3])
    access[dst] = access[src]


@jit
def _resume_move(hdr, slots, access, nslots):
    """Finish a move a dead rehasher logged (MOVE_SRC/DST), copy-then-clear: idempotent."""
    src = hdr[HDR_MOVE_SRC_IDX] - 1
    dst = hdr[HDR_MOVE_DST_IDX] - 1
    if 0 <= src < nslots and 0 <= dst < nslots:
        sh = slots[src * SLOT_WORDS + SLOT_HASH_IDX]
        if sh >= RESERVED_HASHES:
            dh = slots[dst * SLOT_WORDS + SLOT_HASH_IDX]
            dref = slots[dst * SLOT_WORDS + SLOT_REF_IDX]
            if dh != sh or dref != slots[src * SLOT_WORDS + SLOT_REF_IDX]:
                _move_slot(slots, access, src, dst)
            write_slot(slots, src * SLOT_WORDS, EMPTY, 0, 0)
            access[src] = 0
    hdr[HDR_MOVE_SRC_IDX] = 0


@jit
def _rehash_pass(hdr, slots, access):
    """Compact tombstones in one cyclic pass from REHASH_POS up to REHASH_P0 (an empty slot, so no
    probe chain crosses it). Each tombstone (or abandoned claim) becomes empty; each entry moves to
    the first empty slot of its probe chain if that is earlier. A move is logged (MOVE_SRC/DST)
    before it starts; copy-then-clear keeps the key findable throughout."""
    nslots = len(access)
    mask = nslots - 1
    _resume_move(hdr, slots, access, nslots)
    p0 = hdr[HDR_REHASH_P0_IDX] & mask
    i = hdr[HDR_REHASH_POS_IDX] & mask
    for _ in range(nslots):
        if i == p0:
            break
        base = i * SLOT_WORDS
        hh = slots[base + SLOT_HASH_IDX]
        if EMPTY < hh < RESERVED_HASHES:
            write_slot(slots, base, EMPTY, 0, 0)
            access[i] = 0
        elif hh >= RESERVED_HASHES:
            j = hh & mask
            for _probe in range(nslots):
                if j == i or slots[j * SLOT_WORDS + SLOT_HASH_IDX] == EMPTY:
                    break
                j = (j + 1) & mask
            if j != i and slots[j * SLOT_WORDS + SLOT_HASH_IDX] == EMPTY:
                hdr[HDR_MOVE_DST_IDX] = j + 1
                store_release(hdr, HDR_MOVE_SRC_IDX, i + 1)
                _move_slot(slots, access, i, j)
                write_slot(slots, base, EMPTY, 0, 0)
                access[i] = 0
                store_release(hdr, HDR_MOVE_SRC_IDX, 0)
        i = (i + 1) & mask
        store_release(hdr, HDR_REHASH_POS_IDX, i)
    # The pass holds every stripe: it is the moment to make the counters exact again.
    _recount(hdr, slots, nslots)


@jit
def _recount(hdr, slots, nslots):
    """Set COUNT and TOMBS from the slots themselves and clear RECOUNT (caller holds every stripe,
    so no write is between its slot and its counters; see kernels/table.py)."""
    count = 0
    tombs = 0
    for k in range(nslots):
        hh = slots[k * SLOT_WORDS + SLOT_HASH_IDX]
        if hh >= RESERVED_HASHES:
            count += 1
        elif hh != EMPTY:
            tombs += 1  # a tombstone, or a claim nobody holds (a rehash makes both empty)
    store_release(hdr, HDR_COUNT_IDX, count)
    store_release(hdr, HDR_TOMBS_IDX, tombs)
    store_release(hdr, HDR_RECOUNT_IDX, 0)


@jit
def _finish_rehash(hdr, slots, access):
    _rehash_pass(hdr, slots, access)
    store_release(hdr, HDR_REHASH_ACTIVE_IDX, 0)
    seq = hdr[HDR_TABLE_SEQ_IDX]
    store_release(hdr, HDR_TABLE_SEQ_IDX, seq + 1 if seq & 1 else seq + 2)
    fetch_add(hdr, HDR_REHASHES_IDX, 1)


@jit
def _start_rehash(hdr, slots, access, owner, nslots):
    p0 = -1
    for k in range(nslots):
        if slots[k * SLOT_WORDS + SLOT_HASH_IDX] == EMPTY:
            p0 = k
            break
    if p0 < 0:
        return
    hdr[HDR_REHASH_OWNER_IDX] = owner
    hdr[HDR_REHASH_P0_IDX] = p0
    hdr[HDR_REHASH_POS_IDX] = (p0 + 1) & (nslots - 1)
    hdr[HDR_MOVE_SRC_IDX] = 0
    store_release(hdr, HDR_REHASH_ACTIVE_IDX, 1)
    seq = hdr[HDR_TABLE_SEQ_IDX]
    store_release(hdr, HDR_TABLE_SEQ_IDX, seq + 1 if (seq & 1) == 0 else seq + 2)
    _finish_rehash(hdr, slots, access)


@jit
def table_rehash(ctx_addr, force):
    """Drop every tombstone (in place). Takes every stripe in order, so it cannot deadlock with
    another rehash; readers that miss meanwhile retry. Skipped unless needed (or ``force``).

    Returns OK, BUSY (some stripe stayed locked: check for a dead owner, then retry) or CLOSED.
    """
    ctx, hdr, stripes, slots, access, ahdr, data_w, data_b, sizes = table_views(ctx_addr)
    if ctx[CTX_OPEN_IDX] != 1:
        return CLOSED
    owner = ctx[CTX_OWNER_IDX]
    nstripes = ctx[CTX_NSTRIPES_IDX]
    taken = _lock_every_stripe(stripes, nstripes, owner)
    if taken == nstripes:
        nslots = ctx[CTX_NSLOTS_IDX]
        if force or (hdr[HDR_COUNT_IDX] + hdr[HDR_TOMBS_IDX]) * 2 > nslots:
            _start_rehash(hdr, slots, access, owner, nslots)
    for s in range(taken):
        unlock_stripe_word(stripes, s)
    return OK if taken == nstripes else BUSY


@jit(inline="always")
def _lock_every_stripe(stripes, nstripes, owner):
    """Take the stripes in order (so two callers cannot deadlock), each up to the spin budget:
    the number taken, from stripe 0 (all of them, or the caller releases those and reports BUSY)."""
    taken = 0
    while taken < nstripes and lock_stripe_word(stripes, taken, owner):
        taken += 1
    return taken


@jit
def table_recount(ctx_addr):
    """If a repair marked the counters (RECOUNT), take every stripe, count the slots again and
    evict what is over max_entries. Returns OK (counted, or nothing to do), BUSY (a stripe stayed
    held: the mark stays, retry later) or CLOSED."""
    ctx, hdr, stripes, slots, access, ahdr, data_w, data_b, sizes = table_views(ctx_addr)
    if ctx[CTX_OPEN_IDX] != 1:
        return CLOSED
    if load_acquire(hdr, HDR_RECOUNT_IDX) == 0:
        return OK
    nstripes = ctx[CTX_NSTRIPES_IDX]
    taken = _lock_every_stripe(stripes, nstripes, ctx[CTX_OWNER_IDX])
    if taken == nstripes:
        _recount(hdr, slots, ctx[CTX_NSLOTS_IDX])
        # The count may now be over the limit (the dead writer's insert was never counted, so the
        # table let one more in): evict the excess now rather than at the next insert.
        for _ in range(EVICT_ATTEMPTS):
            if hdr[HDR_COUNT_IDX] <= hdr[HDR_MAX_ENTRIES_IDX]:
                break
            evict_one(ctx, hdr, stripes, slots, access, ALL_STRIPES, ahdr, data_w, sizes)
    for s in range(taken):
        unlock_stripe_word(stripes, s)
    return OK if taken == nstripes else BUSY


@jit(allocates=True)  # the stripes it took, in a small array
def table_recover(ctx_addr, dead_owner):
    """Repair what ``dead_owner`` (whom the caller has found dead through the member table) left:
    under the journal's append lock, take every stripe it held, replay its intents, resume its
    rehash if it was rehashing, and release. Returns the number of locks repaired, BUSY (a live
    appender held the journal past the spin budget: retry) or CLOSED."""
    ctx, hdr, stripes, slots, access, ahdr, data_w, data_b, sizes = table_views(ctx_addr)
    if ctx[CTX_OPEN_IDX] != 1:
        return CLOSED
    if dead_owner == 0:
        return 0
    owner = ctx[CTX_OWNER_IDX]
    journal = ctx[CTX_JOURNAL_IDX] != 0
    jhdr, jw, jb, cap = journal_views(ctx)
    dead_held = False
    if journal:
        dead_held = lockword_steal(jhdr, RING_LOCK_IDX, dead_owner, owner)
        if not dead_held and not ring_lock(jhdr, owner):
            return BUSY
    nstripes = ctx[CTX_NSTRIPES_IDX]
    taken = np.zeros(nstripes, np.bool_)
    for s in range(nstripes):
        if lockword_steal(stripes, s * STRIPE_WORDS + STRIPE_LOCK_IDX, dead_owner, owner):
            _replay_intent(ctx, hdr, stripes, s, slots, ahdr, data_w, sizes, dead_held)
            taken[s] = True
    ntaken = taken.sum() + (1 if dead_held else 0)
    if taken.sum() > 0:
        # It may have died between a slot write and the counters: count again (table_recount,
        # once this process holds every stripe, which it must not try while holding the journal).
        store_release(hdr, HDR_RECOUNT_IDX, 1)
    if taken.sum() > 0 and load_acquire(hdr, HDR_REHASH_ACTIVE_IDX) == 1 and hdr[HDR_REHASH_OWNER_IDX] == dead_owner:
        # A rehash holds every stripe, so we now hold them all.
        hdr[HDR_REHASH_OWNER_IDX] = owner
        _finish_rehash(hdr, slots, access)
    # Release only what we took: another thread of this same member may hold a stripe legitimately.
    for s in range(nstripes):
        if taken[s]:
            unlock_stripe_word(stripes, s)
    if journal:
        ring_unlock(jhdr)
    if ntaken > 0:
        fetch_add(hdr, HDR_REPAIRS_IDX, ntaken)
    return ntaken


@jit
def table_lock_owners(ctx_addr, out_addr):
    """The owner words holding a stripe, the rehash or the journal's append lock now, written
    without repeats or zeros to the int64 words at ``out_addr`` (room for the stripe count + 2):
    the owners the Python side checks for liveness when a kernel reported BUSY. Returns the count."""
    ctx, hdr, stripes, slots, access, ahdr, data_w, data_b, sizes = table_views(ctx_addr)
    n = ctx[CTX_NSTRIPES_IDX]
    out = address_to_words(out_addr, n + 2)
    count = 0
    for s in range(n + 2):
        if s < n:
            o = load_acquire(stripes, s * STRIPE_WORDS + STRIPE_LOCK_IDX)
        elif s == n:
            o = hdr[HDR_REHASH_OWNER_IDX] if load_acquire(hdr, HDR_REHASH_ACTIVE_IDX) == 1 else 0
        elif ctx[CTX_JOURNAL_IDX] != 0:
            jhdr, jw, jb, cap = journal_views(ctx)
            o = load_acquire(jhdr, RING_LOCK_IDX)
        else:
            o = 0
        if o == 0:
            continue
        seen = False
        for j in range(count):
            seen = seen or out[j] == o
        if not seen:
            out[count] = o
            count += 1
    return count
