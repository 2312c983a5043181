"""The word indices and sizes of :mod:`nt_memory.kernels.table`, whose docstring draws the layout."""

CTX_OPEN_IDX = 0
CTX_TABLE_IDX = 1
CTX_STRIPES_IDX = 2
CTX_SLOTS_IDX = 3
CTX_ACCESS_IDX = 4
CTX_NSLOTS_IDX = 5
CTX_ARENA_IDX = 6
CTX_ARENA_DATA_IDX = 7
CTX_ARENA_BYTES_IDX = 8
CTX_OUT_BYTES_IDX = 10
CTX_OWNER_IDX = 11
CTX_MEMBER_IDX = 12
CTX_NSTRIPES_IDX = 13
CTX_JOURNAL_IDX = 14  # journal ring header address, 0 = no journal (a bare L1 table)
CTX_JOURNAL_DATA_IDX = 15
CTX_JOURNAL_BYTES_IDX = 16
CTX_MAX_KEY_IDX = 17
CTX_MAX_VALUE_IDX = 18
CTX_TRACK_ACCESS_IDX = 19
CTX_NCLASSES_IDX = 20
CTX_HASH_MASK_IDX = 21
CTX_BEAT_IDX = 22
CTX_CLASS_SIZE_IDX = 32
CTX_MAX_CLASSES = 64
CTX_WORDS = CTX_CLASS_SIZE_IDX + CTX_MAX_CLASSES

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
STRIPE_JPOS_IDX = 9
STRIPE_WORDS = 16  # two 64-byte lines per stripe: writers of different stripes never share a line
STRIPE_BYTES = STRIPE_WORDS * 8
MAX_STRIPES = 64
ALL_STRIPES = -1  # evict_one's caller holds every stripe (a recount)

PHASE_IDLE = 0
PHASE_PREPARED = 1  # NEW_REF written (SLOT maybe claimed), JPOS maybe reserved: see repair.py
PHASE_COMMITTED = 2  # every tier has the write: redo = write the fields into SLOT, free OLD_REF

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
HDR_RECOUNT_IDX = 48
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
# Evictions a recount may make to bring a table a dead writer left over max_entries back within it
# (kernels/repair.py, table_recount); a hostile COUNT cannot make it empty the table.
EVICT_ATTEMPTS = 4

# table_put / table_delete flags
J_JOURNAL = 1  # append the write to the journal (inside the stripe lock)
J_NO_L1 = 2  # do not keep the value in L1 (too large): remove any L1 entry for the key instead
J_PROMOTE = 4  # fill from a lower tier: only if the stripe's VERSION still equals ``version``
J_HELD = 8  # the caller already holds the stripe (table_lock_stripe)
J_IF_EXPIRED = 16  # table_delete: only an entry whose expiry has passed (a reader reclaiming it)

PREFETCH_WRITE = 2  # table_prefetch's stage 0 for a writer
