import os
import platform
import re
import resource
import threading

import numpy as np
import pytest

from nt_memory.errors import CorruptSegment, LayoutMismatch, SegmentError, SegmentNotFound, SystemAbandoned
from nt_memory.shm import layout as L
from nt_memory.shm.segment import Segment
from nt_memory.shm.system import System, describe, gc, list_systems, shm_name
from nt_memory.tiers.l1 import HotCache


def _root_path(name):
    return f"/dev/shm/ntm.{name}.root"


def _tamper(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_attach_missing_system(name):
    with pytest.raises(SegmentNotFound, match=name):
        HotCache.attach(name)


@pytest.mark.parametrize(
    "where, data, error",
    [
        (0, b"GARBAGE!", CorruptSegment),  # magic
        (L.PARAMS_IDX * 8, b"\x07", CorruptSegment),  # params under the checksum
        (L.CHECKSUM_IDX * 8, b"\x01\x02", CorruptSegment),
    ],
)
def test_garbage_header_is_refused(name, where, data, error):
    HotCache.create(name, max_entries=10).close()
    _tamper(_root_path(name), where, data)
    with pytest.raises(error):
        HotCache.attach(name)


def test_garbage_part_header_is_refused(name):
    HotCache.create(name, max_entries=10).close()
    _tamper(f"/dev/shm/ntm.{name}.l1", 0, os.urandom(128))
    with pytest.raises(SegmentError):
        HotCache.attach(name)


def test_truncated_segment_is_refused(name):
    HotCache.create(name, max_entries=10).close()
    os.truncate(f"/dev/shm/ntm.{name}.arena", 64)
    with pytest.raises(CorruptSegment, match="truncated"):
        HotCache.attach(name)
    os.truncate(f"/dev/shm/ntm.{name}.arena", 8192)
    with pytest.raises(CorruptSegment):
        HotCache.attach(name)


def test_foreign_file_is_refused(name):
    with open(_root_path(name), "wb") as f:
        f.write(os.urandom(64 * 1024))
    with pytest.raises(CorruptSegment, match="not an nt-memory segment"):
        HotCache.attach(name)


def test_wrong_kind_is_a_layout_mismatch(name):
    seg = Segment.create(f"/ntm.{name}.root", L.KIND_ARENA, 4096)
    seg.close()
    with pytest.raises(LayoutMismatch, match="expected 'root'"):
        HotCache.attach(name)


def test_missing_part_is_reported(name):
    HotCache.create(name, max_entries=10).close()
    os.unlink(f"/dev/shm/ntm.{name}.arena")
    with pytest.raises(SegmentError, match="missing"):
        HotCache.attach(name)


def test_attacher_waits_for_ready_and_abandoned_creation_is_reported(name):
    root = Segment.create(f"/ntm.{name}.root", L.KIND_ROOT, 4096, state=L.STATE_INITIALIZING)
    root.words[L.CREATOR_PID_IDX] = 2**22 + 12345  # a pid that does not exist
    root.words[L.CHECKSUM_IDX] = L.header_checksum(root.words)
    root.close()
    with pytest.raises(SystemAbandoned, match="never finished"):
        System.attach(name, timeout=1.0)
    assert name in gc()
    assert name not in list_systems()


def test_concurrent_attach_sees_ready_system(name):
    errors = []
    cache = HotCache.create(name, max_entries=10)

    def attach():
        try:
            HotCache.attach(name).close()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=attach) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    cache.close()
    assert not errors


def test_member_table_lists_and_frees_slots(name):
    first = HotCache.create(name, max_entries=10, label="first")
    second = HotCache.attach(name, label="second")
    info = describe(name)
    assert sorted(m.label for m in info.live_members) == ["first", "second"]
    assert all(m.pid == os.getpid() for m in info.members)
    second.close()
    assert [m.label for m in describe(name).live_members] == ["first"]
    first.close()
    assert describe(name).live_members == []
    assert name in gc()


def test_region_outside_segment_is_refused(name):
    seg = Segment.create(f"/ntm.{name}.root", L.KIND_ROOT, 4096)
    try:
        with pytest.raises(CorruptSegment):
            seg.region(4000, 200)
        assert seg.region(L.HEADER_BYTES, 8, np.int64).shape == (1,)
    finally:
        seg.close()
        seg.unlink()


# MADV_POPULATE_WRITE came with Linux 5.14; before it, Segment.populate does nothing.
needs_populate = pytest.mark.skipif(
    tuple(int(x) for x in re.findall(r"\d+", platform.release())[:2]) < (5, 14),
    reason="MADV_POPULATE_WRITE needs Linux 5.14",
)


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _faults_writing_every_page(data: np.ndarray) -> int:
    """Minor page faults taken by one store to every page of ``data`` (each page's first byte
    rewritten with its own value)."""
    before = _minor_faults()
    data[:: L.PAGE_BYTES] = data[:: L.PAGE_BYTES].copy()
    return _minor_faults() - before


@needs_populate
def test_populate_maps_a_region_writable(name):
    seg = Segment.create(shm_name(name, "probe"), 99, 64 * L.PAGE_BYTES)
    try:
        region = seg.buf[L.HEADER_BYTES :]
        assert seg.populate(L.HEADER_BYTES, len(region))
        assert _faults_writing_every_page(region) < 4
        assert not seg.populate(-1, 10) and not seg.populate(L.HEADER_BYTES, -1)
    finally:
        seg.close()
        seg.unlink()


@needs_populate
def test_a_member_maps_the_rings_it_writes_when_it_attaches(mem):
    """The journal and a topic's ring are mapped whole when a member attaches: a fresh process's
    first lap through them took a page fault every 4 KiB (1,367 per 50,000 puts, issue 14)."""
    topic = mem.pubsub.topic("populate")
    ring = topic.seg.buf[topic.data_addr - topic.seg.address : topic.data_addr - topic.seg.address + topic.capacity]
    for data in (mem.journal.data, ring):
        pages = len(data) // L.PAGE_BYTES
        assert pages >= 64
        assert _faults_writing_every_page(data) < pages // 10
