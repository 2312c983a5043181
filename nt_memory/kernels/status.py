"""Status codes returned by kernels. Non-negative results are data (a length, a slot, a count)."""

OK = 0
NOT_FOUND = -1
FULL = -2  # the table or the arena has no room even after eviction
BUSY = -3  # a lock word or a seqlock stayed held past the spin budget: maybe a dead owner
KEY_TOO_LARGE = -4
VALUE_TOO_LARGE = -5
CLOSED = -6  # the handle was closed; its segments may be unmapped
CORRUPT = -7  # a reference points outside its segment or a header is impossible
NEEDS_REHASH = -8  # too many tombstones: call table_rehash, then retry
EXPIRED = -9  # the key is there but its expiry has passed (counts as a miss)
OUT_TOO_SMALL = -10  # the caller's output buffer cannot hold the value
JOURNAL_FULL = -11  # the write-behind journal has no room until the flusher catches up: nothing done
DELETED = -12  # the journal's newest record for the key is a delete
STALE = -13  # a conditional write found the stripe written since its version was read: nothing done
RESERVE = -14  # a number (fence) would pass its durable high-water mark: reserve more, then retry

NAMES = {
    OK: "OK",
    NOT_FOUND: "NOT_FOUND",
    FULL: "FULL",
    BUSY: "BUSY",
    KEY_TOO_LARGE: "KEY_TOO_LARGE",
    VALUE_TOO_LARGE: "VALUE_TOO_LARGE",
    CLOSED: "CLOSED",
    CORRUPT: "CORRUPT",
    NEEDS_REHASH: "NEEDS_REHASH",
    EXPIRED: "EXPIRED",
    OUT_TOO_SMALL: "OUT_TOO_SMALL",
    JOURNAL_FULL: "JOURNAL_FULL",
    DELETED: "DELETED",
    STALE: "STALE",
    RESERVE: "RESERVE",
}
