import multiprocessing as mp

import numpy as np
import pytest

from nt_memory.kernels._jit import jit
from nt_memory.kernels.atomics import (
    address_to_words,
    cas,
    clock_ns,
    coarse_clock_ns,
    fetch_add,
    load_acquire,
    store_release,
)
from nt_memory.shm.layout import HEADER_BYTES, KIND_ARENA
from nt_memory.shm.segment import Segment
from tests.conftest import unique_name


@jit
def _ops(a):
    store_release(a, 0, 5)
    seen_ok = cas(a, 0, 5, 9)
    seen_fail = cas(a, 0, 5, 11)
    before = fetch_add(a, 1, 3)
    return load_acquire(a, 0), seen_ok, seen_fail, before, a[1]


def test_single_process_semantics():
    a = np.zeros(4, np.int64)
    a[1] = 10
    assert _ops(a) == (9, 5, 9, 10, 13)


def test_clocks_agree_with_python():
    import time

    @jit
    def both():
        return clock_ns(), coarse_clock_ns()

    before = time.time_ns()
    precise, coarse = both()
    after = time.time_ns()
    assert before <= precise <= after
    assert coarse <= precise and precise - coarse < 50_000_000


@jit
def _add_many(addr, n):
    w = address_to_words(addr, 1)
    for _ in range(n):
        fetch_add(w, 0, 1)


@jit
def _cas_add_many(addr, n):
    w = address_to_words(addr, 1)
    for _ in range(n):
        while True:
            old = load_acquire(w, 0)
            if cas(w, 0, old, old + 1) == old:
                break


def _worker(shm_name, n, use_cas):
    seg = Segment.attach(shm_name, KIND_ARENA)
    try:
        (_cas_add_many if use_cas else _add_many)(seg.address + HEADER_BYTES, n)
    finally:
        seg.close()


@pytest.mark.multiprocess
@pytest.mark.parametrize("use_cas", [False, True], ids=["fetch_add", "cas_loop"])
def test_two_processes_count_exactly(use_cas):
    """Two processes each add 1 a million times to one shared word: the total is exact."""
    n = 1_000_000
    shm_name = f"/ntm.{unique_name('a')}.word"
    seg = Segment.create(shm_name, KIND_ARENA, 4096)
    try:
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_worker, args=(shm_name, n, use_cas)) for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=120)
        assert [p.exitcode for p in procs] == [0, 0]
        assert int(seg.words[HEADER_BYTES // 8]) == 2 * n
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        seg.close()
        seg.unlink()
