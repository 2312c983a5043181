"""Layouts of the coordination segments: ``topics`` (a directory of pub/sub rings, each ring its
own segment ``topic.<i>`` made on first use), ``locks`` (named locks) and ``consensus``.

``topics`` segment::

    header | control (8 words: LOCK, COUNT) | MAX_TOPICS entries of 64 bytes:
             STATE (0 free, 1 ready) | CAPACITY | NAME_LEN | NAME (40 bytes)
           | MAX_SUBSCRIBERS subscriber entries of 64 bytes (the subscriber board):
             OWNER (its member owner word; 0 free) | TOPIC (directory index) | NEXT (the number
             of the next message it takes) | RECEIVED | DROPPED | SINCE (wall ns) | 2 spare

A subscriber writes only its own entry, after each receive, so that an observer (``nt-memory top``)
sees how far behind the topic each one is: the topic's message count minus NEXT.

``topic.<i>`` segment:: header | ring header (kernels/ring.py) | data (CAPACITY bytes)

``locks`` segment:: header | control (8 words: LOCK) | MAX_LOCKS slots (see kernels/locktable.py)

``consensus`` segment:: header | words (see coordination/consensus.py)
"""

from __future__ import annotations

import dataclasses

from nt_memory.kernels import lazy
from nt_memory.kernels.layout.locktable import LOCK_SLOT_WORDS
from nt_memory.kernels.layout.ring import RING_HDR_BYTES
from nt_memory.shm import layout as L
from nt_memory.shm.segment import Segment

KR = lazy("ring", globals())

TOPIC_ENTRY_WORDS = 8
TOPIC_STATE_IDX = 0
TOPIC_CAPACITY_IDX = 1
TOPIC_NAME_LEN_IDX = 2
TOPIC_NAME_IDX = 3  # 5 words = 40 bytes
TOPIC_NAME_BYTES = 40
CTL_WORDS = 8
CTL_LOCK_IDX = 0
CTL_COUNT_IDX = 1
SUB_WORDS = 8
SUB_OWNER_IDX = 0
SUB_TOPIC_IDX = 1
SUB_NEXT_IDX = 2  # NEXT, RECEIVED, DROPPED are consecutive: the receiver stores the three at once
SUB_RECEIVED_IDX = 3
SUB_DROPPED_IDX = 4
SUB_SINCE_IDX = 5


@dataclasses.dataclass(frozen=True)
class TopicsLayout:
    max_topics: int
    ctl_offset: int
    entries_offset: int
    max_subscribers: int
    subs_offset: int
    total_bytes: int

    @classmethod
    def for_count(cls, max_topics: int, max_subscribers: int) -> TopicsLayout:
        lay = L.Layout()
        lay.add("ctl", CTL_WORDS * 8)
        lay.add("entries", max_topics * TOPIC_ENTRY_WORDS * 8)
        lay.add("subs", max_subscribers * SUB_WORDS * 8)
        return cls(
            max_topics, lay.offset("ctl"), lay.offset("entries"), max_subscribers, lay.offset("subs"), lay.total_bytes
        )

    @property
    def params(self) -> list[int]:
        return [self.max_topics, self.ctl_offset, self.entries_offset, self.max_subscribers, self.subs_offset]


@dataclasses.dataclass(frozen=True)
class TopicRingLayout:
    capacity: int
    ring_offset: int
    data_offset: int
    total_bytes: int

    @classmethod
    def for_capacity(cls, capacity: int) -> TopicRingLayout:
        lay = L.Layout()
        lay.add("ring", RING_HDR_BYTES)
        lay.add("data", capacity)
        return cls(capacity, lay.offset("ring"), lay.offset("data"), lay.total_bytes)

    def init(self, seg: Segment) -> None:
        KR.ring_init(seg.region(self.ring_offset, RING_HDR_BYTES, "int64"), self.capacity)


@dataclasses.dataclass(frozen=True)
class LocksLayout:
    max_locks: int
    ctl_offset: int
    slots_offset: int
    total_bytes: int

    @classmethod
    def for_count(cls, max_locks: int) -> LocksLayout:
        lay = L.Layout()
        lay.add("ctl", CTL_WORDS * 8)
        lay.add("slots", max_locks * LOCK_SLOT_WORDS * 8)
        return cls(max_locks, lay.offset("ctl"), lay.offset("slots"), lay.total_bytes)

    @property
    def params(self) -> list[int]:
        return [self.max_locks, self.ctl_offset, self.slots_offset]
