"""The embedding log's append kernel: the record it writes, and what it refuses."""

from __future__ import annotations

import numpy as np
import pytest

from nt_memory.kernels.embedlog import RECORD_HDR_BYTES, log_write
from nt_memory.kernels.status import CORRUPT, OK
from nt_memory.shm import embed_layout as E

DIM = 4
REC = E.record_bytes(DIM)
WORDS, RECORDS, KEYS, KEYS_END = 0, 64, 64 + 8 * REC, 64 + 8 * REC + 256


def chunk():
    buf = np.zeros(KEYS_END, np.uint8)
    words = buf[:64].view(np.int64)
    words[E.KEY_BUMP_IDX] = KEYS
    return buf, words, np.zeros(1, np.int64)


def write(buf, count, rid, kb, vec, kind=E.REC_PUT, prev=-1, rec_off=None):
    rec_off = RECORDS + rid * REC if rec_off is None else rec_off
    return log_write(
        buf.ctypes.data, len(buf), WORDS, KEYS, KEYS_END, rec_off, REC, count.ctypes.data, rid, kind, prev, kb, vec
    )


def test_a_record_is_written_whole_then_published():
    buf, words, count = chunk()
    vec = np.arange(DIM, dtype=np.float32)
    assert write(buf, count, 0, b"ns\0k1", vec.tobytes()) == OK
    assert write(buf, count, 1, b"ns\0k22", b"", kind=E.REC_DELETE, prev=0) == OK
    assert count[0] == 2 and words[E.KEY_BUMP_IDX] == KEYS + 5 + 6
    head0 = buf[RECORDS : RECORDS + 24].view(np.int64)
    assert list(head0) == [E.REC_PUT | (5 << 32), KEYS, 0]
    assert bytes(buf[KEYS : KEYS + 5]) == b"ns\0k1"
    assert np.array_equal(buf[RECORDS + RECORD_HDR_BYTES : RECORDS + REC].view(np.float32), vec)
    head1 = buf[RECORDS + REC : RECORDS + REC + 24].view(np.int64)
    assert list(head1) == [E.REC_DELETE | (6 << 32), KEYS + 5, 1]
    assert not buf[RECORDS + REC + RECORD_HDR_BYTES : RECORDS + 2 * REC].any()  # a delete's vector is zeros


@pytest.mark.parametrize("bump", [-1, 0, KEYS - 1, KEYS_END - 2, KEYS_END + 8, 1 << 62])
def test_a_hostile_key_bump_is_refused_and_nothing_is_written(bump):
    buf, words, count = chunk()
    words[E.KEY_BUMP_IDX] = bump
    before = buf.copy()
    assert write(buf, count, 0, b"ns\0k1", np.ones(DIM, np.float32).tobytes()) == CORRUPT
    assert np.array_equal(buf, before) and count[0] == 0


@pytest.mark.parametrize("rec_off", [-8, KEYS - REC + 1, KEYS_END])
def test_a_record_outside_the_record_area_is_refused(rec_off):
    buf, words, count = chunk()
    before = buf.copy()
    assert write(buf, count, 0, b"k", np.ones(DIM, np.float32).tobytes(), rec_off=rec_off) == CORRUPT
    assert np.array_equal(buf, before) and count[0] == 0


def test_a_vector_longer_than_the_record_is_refused():
    buf, words, count = chunk()
    assert write(buf, count, 0, b"k", np.ones(DIM + 1, np.float32).tobytes()) == CORRUPT
    assert count[0] == 0
