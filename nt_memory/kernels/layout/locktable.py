"""The word indices and sizes of :mod:`nt_memory.kernels.locktable`, whose docstring draws the layout."""

LOCK_SLOT_WORDS = 16
LK_HASH_IDX = 0
LK_LOCK_IDX = 1
LK_FENCE_IDX = 2
LK_LEASE_IDX = 3
LK_NOTIFY_IDX = 4
LK_WAITERS_IDX = 5
LK_NAME_LEN_IDX = 6
LK_NAME_IDX = 7
LK_NAME_BYTES = 64
LK_HANDOFF_IDX = 15

WAKE_NONE = 0  # lock_release's results (>= 0; STALE < 0)
WAKE_ONE = 1
WAKE_ALL = 2
HASH_FREE = 0
HASH_RECLAIMED = 1
FIRST_HASH = 2

CTL_FENCE_LIMIT_IDX = 2
