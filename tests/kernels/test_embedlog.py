"""The embedding log's kernels: the append (the record it writes, what it refuses), the copy of a
search's keys, and the finiteness check of a vector."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nt_memory.kernels.embedlog import all_finite, log_keys, log_write
from nt_memory.kernels.layout.embedlog import RECORD_HDR_BYTES
from nt_memory.kernels.status import CORRUPT, FULL, OK
from nt_memory.shm import embed_layout as E

DIM = 4
VB = 4 * DIM  # a vector's slot
WORDS, HEADERS, VECTORS = 0, 64, 64 + 8 * RECORD_HDR_BYTES
KEYS = VECTORS + 8 * VB
KEYS_END = KEYS + 256


def chunk():
    buf = np.zeros(KEYS_END, np.uint8)
    words = buf[:64].view(np.int64)
    words[E.KEY_BUMP_IDX] = KEYS
    return buf, words, np.zeros(1, np.int64)


def write(buf, count, rid, kb, vec, kind=E.REC_PUT, prev=-1, hdr_off=None, vec_off=None):
    hdr_off = HEADERS + rid * RECORD_HDR_BYTES if hdr_off is None else hdr_off
    vec_off = VECTORS + rid * VB if vec_off is None else vec_off
    return log_write(
        buf.ctypes.data,
        len(buf),
        WORDS,
        KEYS,
        KEYS_END,
        hdr_off,
        vec_off,
        VB,
        count.ctypes.data,
        rid,
        kind,
        prev,
        kb,
        vec,
    )


def test_a_record_is_written_whole_then_published():
    buf, words, count = chunk()
    vec = np.arange(DIM, dtype=np.float32)
    assert write(buf, count, 0, b"ns\0k1", vec.tobytes()) == OK
    assert write(buf, count, 1, b"ns\0k22", b"", kind=E.REC_DELETE, prev=0) == OK
    assert count[0] == 2 and words[E.KEY_BUMP_IDX] == KEYS + 5 + 6
    head0 = buf[HEADERS : HEADERS + 24].view(np.int64)
    assert list(head0) == [E.REC_PUT | (5 << 32), KEYS, 0]
    assert bytes(buf[KEYS : KEYS + 5]) == b"ns\0k1"
    assert np.array_equal(buf[VECTORS : VECTORS + VB].view(np.float32), vec)
    head1 = buf[HEADERS + RECORD_HDR_BYTES : HEADERS + RECORD_HDR_BYTES + 24].view(np.int64)
    assert list(head1) == [E.REC_DELETE | (6 << 32), KEYS + 5, 1]
    assert not buf[VECTORS + VB : VECTORS + 2 * VB].any()  # a delete writes no vector


@pytest.mark.parametrize("bump", [-1, 0, KEYS - 1, KEYS_END - 2, KEYS_END + 8, 1 << 62])
def test_a_hostile_key_bump_is_refused_and_nothing_is_written(bump):
    buf, words, count = chunk()
    words[E.KEY_BUMP_IDX] = bump
    before = buf.copy()
    assert write(buf, count, 0, b"ns\0k1", np.ones(DIM, np.float32).tobytes()) == CORRUPT
    assert np.array_equal(buf, before) and count[0] == 0


@pytest.mark.parametrize(
    "where", [{"hdr_off": -8}, {"hdr_off": KEYS - RECORD_HDR_BYTES + 1}, {"vec_off": -1}, {"vec_off": KEYS - VB + 1}]
)
def test_a_header_or_vector_outside_its_area_is_refused(where):
    buf, words, count = chunk()
    before = buf.copy()
    assert write(buf, count, 0, b"k", np.ones(DIM, np.float32).tobytes(), **where) == CORRUPT
    assert np.array_equal(buf, before) and count[0] == 0


def test_a_vector_longer_than_its_slot_is_refused():
    buf, words, count = chunk()
    assert write(buf, count, 0, b"k", np.ones(DIM + 1, np.float32).tobytes()) == CORRUPT
    assert count[0] == 0


def _log_with(keys: list[bytes], chunk_records: int = 4):
    """A fake log in private memory: one 'chunk' per ``chunk_records`` records, with ``keys``."""
    rec_bytes, records_off = 48, 64
    chunks, firsts = [], []
    for lo in range(0, len(keys), chunk_records):
        part = keys[lo : lo + chunk_records]
        keys_off = records_off + chunk_records * rec_bytes
        buf = np.zeros(keys_off + sum(len(k) for k in part) + 8, np.uint8)
        at = keys_off
        for j, kb in enumerate(part):
            head = np.array([1 | (len(kb) << 32), at, 0, 0], np.int64)
            buf[records_off + j * rec_bytes : records_off + j * rec_bytes + 32] = head.view(np.uint8)
            buf[at : at + len(kb)] = np.frombuffer(kb, np.uint8)
            at += len(kb)
        chunks.append(buf)
        firsts.append(lo)
    bases = np.array([c.ctypes.data for c in chunks], np.int64)
    sizes = np.array([len(c) for c in chunks], np.int64)
    return chunks, (bases, sizes, np.array(firsts, np.int64), len(chunks), chunk_records, records_off, rec_bytes)


@given(st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=30), st.data())
@settings(max_examples=60, deadline=None)
def test_log_keys_copies_each_hits_key_across_chunks(keys, data):
    chunks, args = _log_with(keys)
    rids = data.draw(st.lists(st.integers(0, len(keys) - 1), min_size=1, max_size=12))
    for room in (1, 4096):  # too small first: FULL and the bytes needed, then all of them
        out, ends = np.zeros(room, np.uint8), np.zeros(len(rids), np.int64)
        st_ = log_keys(*args, np.array(rids, np.int64), out, ends)
        need = sum(len(keys[r]) for r in rids)
        assert int(ends[-1]) == need
        if need > room:
            assert st_ == FULL
        else:
            assert st_ == OK
            starts = [0, *ends[:-1].tolist()]
            assert [out[a:b].tobytes() for a, b in zip(starts, ends.tolist(), strict=True)] == [keys[r] for r in rids]


def test_log_keys_refuses_a_hostile_record():
    keys = [b"ns\0a", b"ns\0bb", b"ns\0ccc"]
    out, ends = np.zeros(64, np.uint8), np.zeros(1, np.int64)
    for word, value in ((0, 2 | (4 << 32)), (0, 1 | (1 << 40)), (1, -5), (1, 1 << 40), (2, 99)):
        chunks, args = _log_with(keys)
        chunks[0][64 + 8 * word : 64 + 8 * word + 8] = np.array([value], np.int64).view(np.uint8)
        assert log_keys(*args, np.array([0], np.int64), out, ends) == CORRUPT, (word, value)
    chunks, args = _log_with(keys)
    assert log_keys(*args, np.array([7], np.int64), out, ends) == CORRUPT  # past every chunk


def test_all_finite():
    v = np.ones(16, np.float32)
    assert all_finite(v)
    for bad in (np.nan, np.inf, -np.inf):
        w = v.copy()
        w[7] = bad
        assert not all_finite(w)
