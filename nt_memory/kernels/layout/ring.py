"""The word indices and sizes of :mod:`nt_memory.kernels.ring`, whose docstring draws the layout."""

RING_CAPACITY_IDX = 0
RING_LOCK_IDX = 8
RING_TAIL_IDX = 16
RING_HEAD_IDX = 24
RING_REMOTE_SEQ_IDX = 25
RING_FORWARD_POS_IDX = 26
RING_FORWARD_NO_IDX = 27
RING_LOCAL_COUNT_IDX = 28
RING_FORWARD_LOCAL_IDX = 29
RING_BRIDGE_WAITERS_IDX = 30  # the cluster bridge asleep on NOTIFY: woken, but not counted as a
# receiver in WAITERS (a receiver spins before it sleeps only while no other receiver sleeps)
LOCAL_SEQ_MASK = 0xFFFFFF  # META's bits 40-63: a MSG record's number among this host's messages
RING_APPENDS_IDX = 32
RING_APPEND_BYTES_IDX = 33
RING_CONSUMER_LOCK_IDX = 40
RING_TAIL_INTENT_IDX = 48
RING_LATEST_IDX = 49
RING_MSG_COUNT_IDX = 50
RING_NOTIFY_IDX = 56  # used as a 32-bit futex word (its low half, little-endian)
RING_WAITERS_IDX = 57
RING_SPINNERS_IDX = 58
RING_HDR_WORDS = 64
RING_HDR_BYTES = RING_HDR_WORDS * 8

RECORD_HDR_BYTES = 16
KIND_MSG = 1  # a message published on this host
KIND_REMOTE = 2  # a message from another host, injected by the cluster bridge
KIND_PAD = 0xFF
KIND_CORRUPT = 0xFE  # reported by ring_record_at for a record whose length runs past the ring


def record_bytes(payload_len):
    """Bytes a record of ``payload_len`` takes in the ring, header and padding included: a multiple
    of 16, so every record (a PAD one included) starts where its header fits before the end.
    Compiled into the kernels by kernels/ring.py."""
    return RECORD_HDR_BYTES + ((payload_len + 15) & ~15)
