"""The embedding log across many chunks: appends that open new chunks (records or key bytes run
out), replacements and deletes that reach back into old chunks, hits and views from every chunk."""

from __future__ import annotations

import numpy as np
import pytest

from nt_memory import CacheConfig, MemoryConfig, MemorySystem
from nt_memory.shm.embed_layout import EmbedLayout

DIM = 8


def _small_chunks(for_dim):
    """``EmbedLayout.for_dim`` with 64-record chunks by default (an attacher's explicit shape stands)."""

    def small(dim, chunk_records=64, chunk_key_bytes=None):
        return for_dim(dim, chunk_records, chunk_key_bytes)

    return small


@pytest.fixture
def mem_config(name, tmp_path, monkeypatch):
    # 64 records and 64 * 48 key bytes a chunk: a few hundred puts span many chunks.
    monkeypatch.setattr(EmbedLayout, "for_dim", _small_chunks(EmbedLayout.for_dim))
    return MemoryConfig(name=name, storage_path=str(tmp_path), embedding_dim=DIM, cache_config=CacheConfig(10_000))


def test_many_chunks_hold_replacements_deletes_and_long_keys(mem):
    rng = np.random.default_rng(3)
    vecs = {f"k{i}": rng.normal(size=DIM).astype(np.float32) for i in range(400)}
    for key, v in vecs.items():
        mem.put("obs", key, 1, embedding=v)
    long_keys = {("L" * 200) + str(i): rng.normal(size=DIM).astype(np.float32) for i in range(40)}
    for key, v in long_keys.items():  # 200-byte keys: the key area fills before the records do
        mem.put("obs", key, 2, embedding=v)
    for i in range(0, 400, 3):  # replacements reach back into the first chunks
        vecs[f"k{i}"] = rng.normal(size=DIM).astype(np.float32)
        mem.put("obs", f"k{i}", 3, embedding=vecs[f"k{i}"])
    for i in range(1, 400, 10):
        mem.delete("obs", f"k{i}")
        del vecs[f"k{i}"]
    assert mem.l2.stats()["chunks"] >= (400 + 40 + 134 + 40) // 64
    live = vecs | long_keys
    for key in list(live)[::17]:
        assert np.array_equal(mem.embedding("obs", key), live[key])
        hits = mem.search_similar("obs", live[key], top_k=3, ef=200)
        assert hits[0].key == key and all(h.key in live for h in hits)
    many = mem.search_similar_many("obs", np.stack([live[k] for k in list(live)[:50]]), top_k=1, ef=200)
    assert [hs[0].key for hs in many] == list(live)[:50]
    assert mem.embedding("obs", "k1") is None


def test_one_call_puts_and_the_general_path_interleave_across_handles_and_chunks(name, tmp_path, monkeypatch):
    """Two handles write the same keys in turn, across many chunks: each put is made in one kernel
    call when this handle's latest-id map is current and its last chunk has room, and by the
    general path otherwise (the other handle appended, the chunk is full); both paths keep each
    key's latest embedding, so reads and searches from either handle agree with a model."""
    monkeypatch.setattr(EmbedLayout, "for_dim", _small_chunks(EmbedLayout.for_dim))
    cfg = MemoryConfig(name=name, storage_path=str(tmp_path), embedding_dim=DIM, cache_config=CacheConfig(10_000))
    rng = np.random.default_rng(5)
    model: dict[str, np.ndarray] = {}
    with MemorySystem.open(cfg) as a, MemorySystem.open(cfg) as b:
        puts = 0
        for step in range(1500):
            mem = a if (step // int(rng.integers(1, 6))) % 2 else b  # runs of a few puts per handle
            key = f"k{int(rng.integers(0, 120))}"
            if rng.random() < 0.1:
                mem.delete("obs", key)
                model.pop(key, None)
                continue
            model[key] = rng.normal(size=DIM).astype(np.float32)
            mem.put("obs", key, step, embedding=model[key])
            puts += 1
        one_call = a.l2.one_call_puts + b.l2.one_call_puts
        assert puts // 4 < one_call < puts, (one_call, puts)  # every switch of handle syncs once
        before = a.l2.one_call_puts
        for i in range(30):  # one handle alone: the first put syncs, one may open a chunk
            model[f"k{i}"] = rng.normal(size=DIM).astype(np.float32)
            a.put("obs", f"k{i}", i, embedding=model[f"k{i}"])
        assert a.l2.one_call_puts - before >= 28
        assert a.stats()["l2"]["one_call_puts_here"] == a.l2.one_call_puts
        assert a.l2.count == b.l2.count and a.l2.stats()["chunks"] > 1500 // 64
        for key in (f"k{i}" for i in range(120)):
            for mem in (a, b):
                got = mem.embedding("obs", key)
                assert (got is None) if key not in model else np.array_equal(got, model[key]), key
        for key in list(model)[::7]:
            hits = b.search_similar("obs", model[key], top_k=3, ef=200)
            assert hits[0].key == key and all(h.key in model for h in hits)
        a.unlink()
