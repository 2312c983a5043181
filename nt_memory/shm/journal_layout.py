"""Layout of the ``journal`` segment: the write-behind journal, a ring in queue mode.

    header (128 B) | ring header (see kernels/ring.py) | data (CAPACITY bytes)

``journal`` params: CAPACITY, RING_OFFSET, DATA_OFFSET.
"""

from __future__ import annotations

import dataclasses

from nt_memory.errors import CorruptSegment
from nt_memory.kernels.ring import RING_CAPACITY_IDX, RING_HDR_BYTES, ring_init
from nt_memory.shm import layout as L
from nt_memory.shm.segment import Segment


@dataclasses.dataclass(frozen=True)
class JournalLayout:
    capacity: int
    ring_offset: int
    data_offset: int
    total_bytes: int

    @classmethod
    def for_size(cls, capacity: int) -> JournalLayout:
        capacity = L.align_up(capacity, 64)
        lay = L.Layout()
        lay.add("ring", RING_HDR_BYTES)
        lay.add("data", capacity)
        return cls(capacity, lay.offset("ring"), lay.offset("data"), lay.total_bytes)

    @property
    def params(self) -> list[int]:
        return [self.capacity, self.ring_offset, self.data_offset]

    @classmethod
    def from_segment(cls, seg: Segment) -> JournalLayout:
        capacity = seg.params[0]
        if not 1024 <= capacity <= seg.size:
            raise CorruptSegment(f"segment {seg.shm_name!r}: impossible journal capacity {capacity}")
        expected = cls.for_size(capacity)
        if expected.params != seg.params[:3] or expected.total_bytes != seg.size:
            raise CorruptSegment(f"segment {seg.shm_name!r}: journal layout parameters are inconsistent")
        ring = seg.region(expected.ring_offset, RING_HDR_BYTES, "int64")
        if int(ring[RING_CAPACITY_IDX]) != capacity:
            raise CorruptSegment(f"segment {seg.shm_name!r}: journal header disagrees with its layout")
        return expected

    def init(self, seg: Segment) -> None:
        ring_init(seg.region(self.ring_offset, RING_HDR_BYTES, "int64"), self.capacity)
