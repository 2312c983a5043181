"""The embedding log's bound: vectors the saved index covers give their shared-memory pages back
(``embedding_window``), and every reader that needed them still gets them, from the saved index
or from L3."""

from __future__ import annotations

import glob
import multiprocessing as mp
import os

import numpy as np
import pytest

from nt_memory import MemoryConfig, MemorySystem
from nt_memory.errors import ConfigError, CorruptSegment
from nt_memory.shm import embed_layout as E
from nt_memory.shm.system import SHM_DIR
from tests.tiers.test_l2 import clustered, l2_config

DIM = 64
WINDOW = 2_000


@pytest.fixture
def cfg(name, tmp_path):
    return l2_config(name, tmp_path, DIM, embedding_window=WINDOW, index_sharing="local")


def _allocated(mem) -> int:
    """Bytes /dev/shm really holds for the log's chunks (holes do not count)."""
    return sum(os.stat(os.path.join(SHM_DIR, c.shm_name.lstrip("/"))).st_blocks * 512 for c in mem.l2._chunks)


def _top(mem, vec, ns="docs") -> str:
    return mem.search_similar(ns, vec, top_k=1)[0].key


def test_released_vectors_give_their_pages_back_and_stay_findable(cfg):
    data = clustered(6_000, DIM)
    with MemorySystem.open(cfg) as mem:
        mem.put_many("docs", [(f"d{i}", i) for i in range(len(data))], embeddings=data)
        mem.l2._locate(len(data) - 1)  # map every chunk here, to measure them
        before = _allocated(mem)
        assert _top(mem, data[10]) == "d10"  # the first search indexes, saves and releases
        released = mem.stats()["l2"]["vectors_released_below"]
        after = _allocated(mem)
        print(f"log chunks: {before:,} -> {after:,} bytes allocated, released below {released}")
        assert released == len(data)
        assert before - after >= (released * 4 * DIM) // 4096 * 4096 - 4096
        # Every released vector is still searched, read back and replaced correctly.
        for i in (0, 1_999, 4_321, 5_999):
            assert _top(mem, data[i]) == f"d{i}"
            assert np.array_equal(mem.embedding("docs", f"d{i}"), data[i])
        mem.put("docs", "d7", "moved", embedding=data[9] * -1)  # supersedes a released record
        hits = {h.key for h in mem.search_similar("docs", data[7], top_k=5)}
        assert "d7" not in hits
        assert _top(mem, data[9] * -1) == "d7"
        mem.delete("docs", "d8")
        assert "d8" not in {h.key for h in mem.search_similar("docs", data[8], top_k=5)}
        mem.unlink()


def test_a_window_of_zero_keeps_every_vector(cfg):
    import dataclasses

    data = clustered(3_000, DIM)
    with MemorySystem.open(dataclasses.replace(cfg, embedding_window=0)) as mem:
        mem.put_many("docs", [(f"d{i}", i) for i in range(len(data))], embeddings=data)
        assert _top(mem, data[5]) == "d5"
        assert mem.stats()["l2"]["vectors_released_below"] == 0
        mem.unlink()


def test_a_handle_behind_a_release_reloads_the_saved_index(cfg):
    """Two local indexes of one system: the one that falls a window behind finds the vectors it
    had not read released, loads the saved index, and answers as before."""
    data = clustered(9_000, DIM)
    with MemorySystem.open(cfg) as a, MemorySystem.open(cfg) as b:
        a.put_many("docs", [(f"d{i}", i) for i in range(1_000)], embeddings=data[:1_000])
        assert _top(b, data[3]) == "d3"  # b indexes 1,000 and keeps them
        a.put_many("docs", [(f"d{i}", i) for i in range(1_000, 9_000)], embeddings=data[1_000:])
        assert _top(a, data[4]) == "d4"  # a indexes all, saves and releases below 9,000
        assert a.stats()["l2"]["vectors_released_below"] == 9_000
        for i in (3, 1_500, 8_999):
            assert _top(b, data[i]) == f"d{i}"
        assert b.stats()["l2"]["indexed_here"] == 9_000
        a.unlink()


def _search_in_child(name, path, queries, out):
    cfg = MemoryConfig(name=name, storage_path=path, embedding_dim=DIM, index_sharing="local")
    with MemorySystem.open(cfg) as mem:
        out.put([mem.search_similar("docs", q, top_k=1)[0].key for q in queries])


@pytest.mark.multiprocess
@pytest.mark.parametrize("lose_the_saved_index", [False, True])
def test_a_new_process_after_a_release_finds_every_vector(cfg, tmp_path, lose_the_saved_index):
    """It loads the saved index and indexes the tail; with the saved index gone, it rebuilds the
    released part from L3."""
    data = clustered(5_000, DIM)
    with MemorySystem.open(cfg) as mem:
        mem.put_many("docs", [(f"d{i}", i) for i in range(4_000)], embeddings=data[:4_000])
        assert _top(mem, data[0]) == "d0"
        assert mem.stats()["l2"]["vectors_released_below"] == 4_000
        mem.put_many("docs", [(f"d{i}", i) for i in range(4_000, 5_000)], embeddings=data[4_000:])
        mem.flush()
        if lose_the_saved_index:
            for f in glob.glob(os.path.join(str(tmp_path), "l2", "*.hnsw*")):
                os.unlink(f)
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        picks = [0, 123, 3_999, 4_000, 4_999]
        p = ctx.Process(target=_search_in_child, args=(cfg.name, cfg.storage_path, data[picks], out))
        p.start()
        got = out.get(timeout=120)
        p.join(30)
        assert got == [f"d{i}" for i in picks]
        mem.unlink()


@pytest.mark.parametrize("word", [-1, 10**9])
def test_an_impossible_released_word_is_refused(cfg, word):
    data = clustered(100, DIM)
    with MemorySystem.open(cfg) as mem:
        mem.put_many("docs", [(f"d{i}", i) for i in range(len(data))], embeddings=data)
        mem.l2.ctl[E.RELEASED_IDX] = word
        with pytest.raises(CorruptSegment, match="released"):
            mem.search_similar("docs", data[0])
        mem.l2.ctl[E.RELEASED_IDX] = 0
        assert _top(mem, data[1]) == "d1"
        mem.unlink()


@pytest.mark.parametrize("bad", [-1, 1.5, True, "many"])
def test_a_bad_window_is_refused(bad):
    with pytest.raises(ConfigError, match="embedding_window"):
        MemoryConfig(embedding_window=bad)
