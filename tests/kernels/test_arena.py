import numpy as np
import pytest

from nt_memory.kernels.arena import arena_alloc, arena_free, arena_init, ref_gen, ref_offset
from nt_memory.kernels.layout.arena import ARENA_HDR_WORDS, ARENA_USED_BYTES_IDX, class_sizes
from nt_memory.kernels.status import CORRUPT, FULL, OK


class Arena:
    """An arena in private memory, called the way the table calls it (private sizes)."""

    def __init__(self, data_bytes=1 << 16, max_block=4096):
        self.hdr = np.zeros(ARENA_HDR_WORDS, np.int64)
        self.data = np.zeros(data_bytes // 8, np.int64)
        self.data_bytes = data_bytes
        self.sizes = class_sizes(max_block)
        arena_init(self.hdr, data_bytes, max_block)

    def alloc(self, n):
        return arena_alloc(self.hdr, self.data, n, self.data_bytes, self.sizes)

    def free(self, ref):
        return arena_free(self.hdr, self.data, ref, self.data_bytes, self.sizes)


def test_class_sizes_ascend_in_16_byte_steps_and_waste_under_a_quarter():
    sizes = class_sizes(1 << 20)
    assert (np.diff(sizes) > 0).all() and (sizes % 16 == 0).all()
    assert (sizes[1:] / sizes[:-1] <= 1.5).all()
    assert sizes[-1] >= 1 << 20


def test_alloc_free_reuses_blocks_and_bumps_generation():
    a = Arena()
    r1 = a.alloc(40)
    assert r1 > 0 and ref_offset(r1) % 16 == 0
    assert a.free(r1) == OK
    assert a.hdr[ARENA_USED_BYTES_IDX] == 0
    r2 = a.alloc(40)
    assert ref_offset(r2) == ref_offset(r1) and ref_gen(r2) == ref_gen(r1) + 1
    # A stale reference is ignored, not freed twice.
    assert a.free(r1) == OK
    assert a.hdr[ARENA_USED_BYTES_IDX] > 0


def test_blocks_never_overlap_until_full():
    a = Arena(data_bytes=1 << 14)
    spans = []
    while True:
        r = a.alloc(100)
        if r == FULL:
            break
        assert r > 0
        spans.append((ref_offset(r), ref_offset(r) + 128))
    spans.sort()
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert len(spans) > 100


def test_impossible_reference_is_corrupt_not_a_crash():
    a = Arena()
    assert a.free((1 << 40) | (1 << 39)) == CORRUPT
    assert a.free(0) == CORRUPT


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 4000])
def test_every_size_up_to_the_limit_fits(size):
    assert Arena().alloc(size) > 0


def test_too_large_is_full():
    assert Arena(max_block=4096).alloc(1 << 20) == FULL


@pytest.mark.parametrize("word", [0, 1, 8, 16, 24, 30, 88, 96])
@pytest.mark.parametrize("value", [-1, -(1 << 62), 1 << 62, 0x7FFF_FFFF, 3])
def test_hostile_header_words_never_move_a_store_outside_the_region(word, value):
    """The arena's sizes come from the caller; a rewritten shared word yields FULL or CORRUPT."""
    a = Arena(data_bytes=1 << 14)
    refs = [a.alloc(40) for _ in range(8)]
    for r in refs[::2]:
        a.free(r)
    guard = np.zeros(64, np.int64)
    data = np.concatenate([a.data, guard])  # a guard zone right after the region
    a.data = data[: len(a.data)]
    a.hdr[word] = value
    for n in (0, 40, 100, 3000):
        r = a.alloc(n)
        assert r > 0 or r in (FULL, CORRUPT)
        if r > 0:
            assert ref_offset(r) + 16 + n <= a.data_bytes
            assert a.free(r) in (OK, CORRUPT)
    assert not data[len(a.data) :].any()
