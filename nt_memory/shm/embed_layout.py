"""Layouts of the embedding log: a control segment ``embed`` and chunk segments ``embed.<i>``.

``embed`` segment::

    header (128 B) | control words (64 int64): one 64-byte line per group
        line 0  LOCK                 appenders' lock word (owner word)
        line 1  COUNT                records committed (release-stored after each append)
        line 2  NCHUNKS              chunk segments published
        line 3  DIM  CHUNK_RECORDS  CHUNK_KEY_BYTES  LOG_ID  RECORD_BYTES
        line 4  SERVER  SERVER_BEAT_NS  SERVER_IDLE_NS
                SERVER: owner word of the process that holds the search index and answers the
                others' searches (``coordination/search.py``), 0 if none; SERVER_BEAT_NS: wall ns
                when its serving thread last went round its loop; SERVER_IDLE_NS: the start (wall
                ns) of its latest poll of the request topic that found nothing
        line 5  RELEASED             records below this id have no vector here any more: the saved
                index (``storage_path/l2``) covers them and L3 holds their latest vectors; their
                headers and keys stay (``VectorTier.release``)

``embed.<i>`` chunk (created on demand by an appender; a mapped chunk is never remapped)::

    header (128 B) | chunk words (8 int64): FIRST_ID KEY_BUMP | record headers (32 B each)
        | vectors (4 * DIM B each, from a page boundary) | key bytes

Record ``i`` of a chunk is its header ``i`` and its vector ``i`` (RECORD_BYTES = 32 + 4 * DIM in
all). Vectors lie apart from the headers so that a released range (below RELEASED) gives its pages
back to the system (``madvise(MADV_REMOVE)``: a hole in the tmpfs file, for every process that maps
it) while every record's header and key stay readable.

Record header::

    word 0  kind (PUT 1, DELETE 2) | key length << 32
    word 1  key offset in the chunk's key area
    word 2  previous record id of the key + 1 (0 = none): what this record supersedes
    word 3  (spare)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from nt_memory.errors import CorruptSegment
from nt_memory.kernels import lazy
from nt_memory.shm import layout as L
from nt_memory.shm.segment import Segment

KW = lazy("words", globals())

CTL_WORDS = 64
LOCK_IDX = 0
COUNT_IDX = 8
NCHUNKS_IDX = 16
DIM_IDX = 24
CHUNK_RECORDS_IDX = 25
CHUNK_KEY_BYTES_IDX = 26
LOG_ID_IDX = 27
RECORD_BYTES_IDX = 28
SERVER_IDX = 32
SERVER_BEAT_IDX = 33
SERVER_IDLE_IDX = 34
RELEASED_IDX = 40

CHUNK_WORDS = 8
FIRST_ID_IDX = 0
KEY_BUMP_IDX = 1

RECORD_HDR_BYTES = 32
REC_PUT = 1
REC_DELETE = 2


def record_bytes(dim: int) -> int:
    return RECORD_HDR_BYTES + 4 * dim


@dataclasses.dataclass(frozen=True)
class EmbedLayout:
    dim: int
    chunk_records: int
    chunk_key_bytes: int
    ctl_offset: int
    total_bytes: int

    @classmethod
    def for_dim(cls, dim: int, chunk_records: int = 65_536, chunk_key_bytes: int | None = None) -> EmbedLayout:
        lay = L.Layout()
        lay.add("ctl", CTL_WORDS * 8)
        return cls(dim, chunk_records, chunk_key_bytes or chunk_records * 48, lay.offset("ctl"), lay.total_bytes)

    @property
    def params(self) -> list[int]:
        return [self.dim, self.chunk_records, self.chunk_key_bytes, self.ctl_offset]

    @classmethod
    def from_segment(cls, seg: Segment) -> EmbedLayout:
        dim, chunk_records, chunk_key_bytes, ctl_offset = seg.params[:4]
        if not (0 < dim <= 65_536 and 0 < chunk_records <= 1 << 24 and 0 < chunk_key_bytes <= 1 << 32):
            raise CorruptSegment(f"segment {seg.shm_name!r}: impossible embedding log shape")
        expected = cls.for_dim(dim, chunk_records, chunk_key_bytes)
        if expected.params != seg.params[:4] or expected.total_bytes != seg.size:
            raise CorruptSegment(f"segment {seg.shm_name!r}: embedding log parameters are inconsistent")
        return expected

    def init(self, seg: Segment, log_id: int) -> None:
        ctl = np.zeros(CTL_WORDS, np.int64)  # composed here, stored in one call
        ctl[DIM_IDX] = self.dim
        ctl[CHUNK_RECORDS_IDX] = self.chunk_records
        ctl[CHUNK_KEY_BYTES_IDX] = self.chunk_key_bytes
        ctl[LOG_ID_IDX] = log_id
        ctl[RECORD_BYTES_IDX] = record_bytes(self.dim)
        KW.store_words(seg.region(self.ctl_offset, CTL_WORDS * 8, "int64"), 0, ctl)

    def chunk_layout(self) -> L.Layout:
        lay = L.Layout()
        lay.add("chunk", CHUNK_WORDS * 8)
        lay.add("headers", self.chunk_records * RECORD_HDR_BYTES)
        lay.add("vectors", self.chunk_records * 4 * self.dim, align=L.PAGE_BYTES)
        lay.add("keys", self.chunk_key_bytes, align=L.PAGE_BYTES)
        return lay
