"""The header every segment starts with, and the running-sum builder of segment layouts.

Segment header (128 bytes, int64 words)::

    word 0   MAGIC          b"NTMEMSEG" (little-endian)
    word 1   VERSION_KIND   layout version (low 32 bits) | part kind << 32
    word 2   TOTAL_BYTES    size of the whole segment; must equal the file's size
    word 3   HEADER_BYTES   where the payload starts (this header's size)
    word 4   CREATOR_PID
    word 5   CREATED_NS     wall clock at creation
    word 6   STATE          INITIALIZING -> READY (release store); not covered by the checksum
    word 7   CHECKSUM       xxh3-64 of words 0-5 and 8-15, top bit cleared
    word 8   PARAMS[8]      layout-specific (capacities, region offsets)

A segment that is shorter than its header, of another magic, version or kind, whose checksum does
not match, or whose params put a region past its end, is refused with a ``SegmentError`` before any
kernel sees it.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import xxhash

MAGIC = int.from_bytes(b"NTMEMSEG", "little")
LAYOUT_VERSION = 2  # 2: embedding chunks keep vectors apart from record headers
HEADER_BYTES = 128
PAGE_BYTES = 4096
CACHE_LINE_BYTES = 64

MAGIC_IDX = 0
VERSION_KIND_IDX = 1
TOTAL_BYTES_IDX = 2
HEADER_BYTES_IDX = 3
CREATOR_PID_IDX = 4
CREATED_NS_IDX = 5
STATE_IDX = 6
CHECKSUM_IDX = 7
PARAMS_IDX = 8
N_PARAMS = 8

STATE_INITIALIZING = 1
STATE_READY = 2

KIND_ROOT = 1
KIND_L1 = 2
KIND_ARENA = 3
KIND_JOURNAL = 4
KIND_EMBED = 5
KIND_EMBED_CHUNK = 6
KIND_TOPICS = 7
KIND_TOPIC = 8
KIND_LOCKS = 9
KIND_CONSENSUS = 10
KIND_NAMES = {
    KIND_ROOT: "root",
    KIND_L1: "l1-table",
    KIND_ARENA: "arena",
    KIND_JOURNAL: "journal",
    KIND_EMBED: "embedding-log",
    KIND_EMBED_CHUNK: "embedding-chunk",
    KIND_TOPICS: "topics",
    KIND_TOPIC: "topic-ring",
    KIND_LOCKS: "locks",
    KIND_CONSENSUS: "consensus",
}


def text_words(raw: bytes, nwords: int | None = None) -> np.ndarray:
    """``raw`` zero-padded into ``nwords`` little-endian int64 words (as few as hold it by default),
    for :func:`store_words`."""
    if nwords is None:
        nwords = -(-len(raw) // 8)
    if len(raw) > 8 * nwords:
        raise ValueError(f"{len(raw)} bytes do not fit in {nwords} words")
    return np.frombuffer(raw.ljust(8 * nwords, b"\0"), dtype=np.int64)


def float_word(x: float) -> int:
    """The int64 whose bits are the float64 ``x``: how a float goes through :func:`store_word`."""
    return int(np.float64(x).view(np.int64))


def align_up(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


def header_checksum(words: np.ndarray) -> int:
    covered = np.concatenate([words[MAGIC_IDX:STATE_IDX], words[PARAMS_IDX : PARAMS_IDX + N_PARAMS]])
    return xxhash.xxh3_64_intdigest(covered.tobytes()) & 0x7FFF_FFFF_FFFF_FFFF


@dataclasses.dataclass
class Layout:
    """Regions placed one after another behind the header, each aligned to a cache line."""

    regions: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    end: int = HEADER_BYTES

    def add(self, name: str, nbytes: int, align: int = CACHE_LINE_BYTES) -> int:
        offset = align_up(self.end, align)
        self.regions[name] = (offset, nbytes)
        self.end = offset + nbytes
        return offset

    @property
    def total_bytes(self) -> int:
        return align_up(self.end, PAGE_BYTES)

    def offset(self, name: str) -> int:
        return self.regions[name][0]


def make_log_id() -> int:
    """A random 56-bit id for a log made at creation (journal, embedding log): positions durably
    recorded for one log are never applied to another made after a reboot."""
    return int.from_bytes(os.urandom(7), "little")
