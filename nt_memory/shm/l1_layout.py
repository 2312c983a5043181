"""Layouts of the two L1 segments: the table (``l1``) and its value arena (``arena``).

``l1`` segment::

    header (128 B) | table header (64 words) | stripes (NSTRIPES x 128 B) | slots (NSLOTS x 32 B)
                   | access bytes (NSLOTS x 1 B)

(tests/shm/test_layout_diagrams.py checks every size in these diagrams against the constants.)

``l1`` params: NSLOTS, NSTRIPES, TABLE_OFFSET, STRIPES_OFFSET, SLOTS_OFFSET, ACCESS_OFFSET.

``arena`` segment::

    header (128 B) | arena header (see kernels/arena.py) | data (DATA_BYTES, 16-byte blocks)

``arena`` params: DATA_BYTES, ARENA_OFFSET, DATA_OFFSET, MAX_BLOCK_BYTES.

The record layouts inside the regions belong to the kernels that read them (kernels/table.py,
kernels/arena.py); this module places the regions and checks that a segment's params agree.
"""

from __future__ import annotations

import dataclasses

from nt_memory.errors import CorruptSegment
from nt_memory.kernels import lazy
from nt_memory.kernels.layout.arena import ARENA_HDR_BYTES, BLOCK_HDR_BYTES, class_sizes
from nt_memory.kernels.layout.table import SLOT_BYTES, STRIPE_BYTES, TABLE_HDR_BYTES
from nt_memory.shm import layout as L
from nt_memory.shm.segment import Segment

KA = lazy("arena", globals())
KT = lazy("table", globals())

NSTRIPES = 64
MIN_SLOTS = 64
MAX_ARENA_BYTES = 64 << 30  # free-list heads hold 32-bit 16-byte units


def slots_for(max_entries: int) -> int:
    """Two slots per entry, rounded up to a power of two: probes stay short with tombstones."""
    n = MIN_SLOTS
    while n < 2 * max_entries:
        n <<= 1
    return n


@dataclasses.dataclass(frozen=True)
class L1Layout:
    nslots: int
    nstripes: int
    table_offset: int
    stripes_offset: int
    slots_offset: int
    access_offset: int
    total_bytes: int

    @classmethod
    def for_capacity(cls, max_entries: int, nstripes: int = NSTRIPES) -> L1Layout:
        nslots = slots_for(max_entries)
        lay = L.Layout()
        lay.add("table", TABLE_HDR_BYTES)
        lay.add("stripes", nstripes * STRIPE_BYTES)
        lay.add("slots", nslots * SLOT_BYTES)
        lay.add("access", nslots)
        return cls(
            nslots,
            nstripes,
            lay.offset("table"),
            lay.offset("stripes"),
            lay.offset("slots"),
            lay.offset("access"),
            lay.total_bytes,
        )

    @property
    def params(self) -> list[int]:
        return [
            self.nslots,
            self.nstripes,
            self.table_offset,
            self.stripes_offset,
            self.slots_offset,
            self.access_offset,
        ]

    @classmethod
    def from_segment(cls, seg: Segment) -> L1Layout:
        nslots, nstripes = seg.params[:2]
        if nslots < MIN_SLOTS or nslots & (nslots - 1) or nstripes < 1 or nstripes > 64 or nstripes & (nstripes - 1):
            raise CorruptSegment(
                f"segment {seg.shm_name!r}: impossible table shape {nslots} slots / {nstripes} stripes"
            )
        expected = cls.for_capacity(nslots // 2, nstripes)
        if expected.params != seg.params[:6] or expected.total_bytes != seg.size:
            raise CorruptSegment(f"segment {seg.shm_name!r}: table layout parameters are inconsistent")
        return expected

    def init(self, seg: Segment, *, max_entries, max_key, max_value, track_access, hash_mask, default_ttl_ns):
        hdr = seg.region(self.table_offset, TABLE_HDR_BYTES, "int64")
        KT.table_init(
            hdr, self.nslots, max_entries, max_key, max_value, self.nstripes, track_access, hash_mask, default_ttl_ns
        )


@dataclasses.dataclass(frozen=True)
class ArenaLayout:
    data_bytes: int
    arena_offset: int
    data_offset: int
    max_block_bytes: int
    total_bytes: int

    @classmethod
    def for_size(cls, data_bytes: int, max_block_bytes: int) -> ArenaLayout:
        data_bytes = L.align_up(data_bytes, 64)
        lay = L.Layout()
        lay.add("arena", ARENA_HDR_BYTES)
        lay.add("data", data_bytes)
        return cls(data_bytes, lay.offset("arena"), lay.offset("data"), max_block_bytes, lay.total_bytes)

    @property
    def params(self) -> list[int]:
        return [self.data_bytes, self.arena_offset, self.data_offset, self.max_block_bytes]

    @classmethod
    def from_segment(cls, seg: Segment) -> ArenaLayout:
        data_bytes, _a, _d, max_block = seg.params[:4]
        if not 0 < data_bytes <= MAX_ARENA_BYTES or max_block <= BLOCK_HDR_BYTES:
            raise CorruptSegment(f"segment {seg.shm_name!r}: impossible arena size {data_bytes}")
        expected = cls.for_size(data_bytes, max_block)
        if expected.params != seg.params[:4] or expected.total_bytes != seg.size:
            raise CorruptSegment(f"segment {seg.shm_name!r}: arena layout parameters are inconsistent")
        return expected

    def init(self, seg: Segment) -> None:
        hdr = seg.region(self.arena_offset, ARENA_HDR_BYTES, "int64")
        KA.arena_init(hdr, self.data_bytes, self.max_block_bytes)

    def validate_header(self, seg: Segment) -> None:
        hdr = seg.region(self.arena_offset, ARENA_HDR_BYTES, "int64")
        sizes = class_sizes(self.max_block_bytes)
        if int(hdr[0]) != self.data_bytes or int(hdr[1]) != len(sizes):
            raise CorruptSegment(f"segment {seg.shm_name!r}: arena header disagrees with its layout")
