"""Layout of the ``journal`` segment: the write-behind journal, a ring in queue mode.

    header (128 B) | ring header (see kernels/ring.py) | data (CAPACITY bytes)

``journal`` params (checksummed): CAPACITY, RING_OFFSET, DATA_OFFSET, JOURNAL_ID (random at
create: names this journal's drain position in LMDB, so a journal made after a reboot starts its
own count).

The journal uses the ring header's line 5 for its consumers::

    word 40  DRAIN_LOCK     owner word of the process draining a batch now (0 = none)
    word 41  ROLE           owner word of the *flusher*: the process whose thread drains eagerly
    word 42  ROLE_BEAT_NS   wall ns when the flusher's thread last went round its loop
    word 43  PROGRESS_NS    wall ns when HEAD last advanced
    word 44  DRAINS         batches committed (statistics)

and line 7 (NOTIFY, WAITERS) as a futex word bumped after HEAD advances, for writers waiting to
become durable (``durability="sync"``, ``flush()``) or for room.
"""

from __future__ import annotations

import dataclasses

from nt_memory.errors import CorruptSegment
from nt_memory.kernels import lazy
from nt_memory.kernels.layout.ring import RING_CAPACITY_IDX, RING_CONSUMER_LOCK_IDX, RING_HDR_BYTES
from nt_memory.shm import layout as L
from nt_memory.shm.segment import Segment

KR = lazy("ring", globals())

DRAIN_LOCK_IDX = RING_CONSUMER_LOCK_IDX
ROLE_IDX = DRAIN_LOCK_IDX + 1
ROLE_BEAT_IDX = DRAIN_LOCK_IDX + 2
PROGRESS_IDX = DRAIN_LOCK_IDX + 3
DRAINS_IDX = DRAIN_LOCK_IDX + 4
MIN_CAPACITY = 1024


@dataclasses.dataclass(frozen=True)
class JournalLayout:
    capacity: int
    ring_offset: int
    data_offset: int
    journal_id: int
    total_bytes: int

    @classmethod
    def for_size(cls, capacity: int, journal_id: int = 0) -> JournalLayout:
        capacity = L.align_up(capacity, 64)
        lay = L.Layout()
        lay.add("ring", RING_HDR_BYTES)
        lay.add("data", capacity)
        return cls(capacity, lay.offset("ring"), lay.offset("data"), journal_id, lay.total_bytes)

    @property
    def params(self) -> list[int]:
        return [self.capacity, self.ring_offset, self.data_offset, self.journal_id]

    @classmethod
    def from_segment(cls, seg: Segment) -> JournalLayout:
        capacity, _r, _d, journal_id = seg.params[:4]
        if not MIN_CAPACITY <= capacity <= seg.size or capacity % 64:
            raise CorruptSegment(f"segment {seg.shm_name!r}: impossible journal capacity {capacity}")
        expected = cls.for_size(capacity, journal_id)
        if expected.params != seg.params[:4] or expected.total_bytes != seg.size:
            raise CorruptSegment(f"segment {seg.shm_name!r}: journal layout parameters are inconsistent")
        ring = seg.region(expected.ring_offset, RING_HDR_BYTES, "int64")
        if int(ring[RING_CAPACITY_IDX]) != capacity:
            raise CorruptSegment(f"segment {seg.shm_name!r}: journal header disagrees with its layout")
        return expected

    def init(self, seg: Segment) -> None:
        KR.ring_init(seg.region(self.ring_offset, RING_HDR_BYTES, "int64"), self.capacity)
