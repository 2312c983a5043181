import numpy as np
import pytest

from nt_memory.kernels.arena import (
    ARENA_HDR_WORDS,
    ARENA_USED_BYTES_IDX,
    arena_alloc,
    arena_free,
    arena_init,
    class_sizes,
    ref_gen,
    ref_offset,
)
from nt_memory.kernels.status import CORRUPT, FULL, OK


def make(data_bytes=1 << 16, max_block=4096):
    hdr = np.zeros(ARENA_HDR_WORDS, np.int64)
    data = np.zeros(data_bytes // 8, np.int64)
    arena_init(hdr, data_bytes, max_block)
    return hdr, data


def test_class_sizes_ascend_in_16_byte_steps_and_waste_under_a_quarter():
    sizes = class_sizes(1 << 20)
    assert (np.diff(sizes) > 0).all() and (sizes % 16 == 0).all()
    assert (sizes[1:] / sizes[:-1] <= 1.5).all()
    assert sizes[-1] >= 1 << 20


def test_alloc_free_reuses_blocks_and_bumps_generation():
    hdr, data = make()
    r1 = arena_alloc(hdr, data, 40)
    assert r1 > 0 and ref_offset(r1) % 16 == 0
    assert arena_free(hdr, data, r1) == OK
    assert hdr[ARENA_USED_BYTES_IDX] == 0
    r2 = arena_alloc(hdr, data, 40)
    assert ref_offset(r2) == ref_offset(r1) and ref_gen(r2) == ref_gen(r1) + 1
    # A stale reference is ignored, not freed twice.
    assert arena_free(hdr, data, r1) == OK
    assert hdr[ARENA_USED_BYTES_IDX] > 0


def test_blocks_never_overlap_until_full():
    hdr, data = make(data_bytes=1 << 14)
    spans = []
    while True:
        r = arena_alloc(hdr, data, 100)
        if r == FULL:
            break
        assert r > 0
        spans.append((ref_offset(r), ref_offset(r) + 128))
    spans.sort()
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert len(spans) > 100


def test_impossible_reference_is_corrupt_not_a_crash():
    hdr, data = make()
    assert arena_free(hdr, data, (1 << 40) | (1 << 39)) == CORRUPT
    assert arena_free(hdr, data, 0) == CORRUPT


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 4000])
def test_every_size_up_to_the_limit_fits(size):
    hdr, data = make()
    assert arena_alloc(hdr, data, size) > 0


def test_too_large_is_full():
    hdr, data = make(max_block=4096)
    assert arena_alloc(hdr, data, 1 << 20) == FULL
