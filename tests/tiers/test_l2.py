"""L2: recall against exact search, deletes, namespace filtering, restart, bad input."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest

from nt_memory import CacheConfig, MemoryConfig, MemorySystem
from nt_memory.errors import ConfigError, InvalidEmbedding


def clustered(n, dim, clusters=50, seed=0):
    """A Gaussian mixture: real embeddings cluster."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim)).astype(np.float32) * 3
    labels = rng.integers(0, clusters, n)
    return (centers[labels] + rng.normal(size=(n, dim)).astype(np.float32)).astype(np.float32)


def exact_cosine_topk(data, queries, k):
    dn = data / np.linalg.norm(data, axis=1, keepdims=True)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    return np.argsort(-(qn @ dn.T), axis=1)[:, :k]


def l2_config(name, path, dim: int, max_entries: int = 50_000, **settings) -> MemoryConfig:
    """A system for the L2 tests: ``dim``-d embeddings, room for ``max_entries``, ``settings``."""
    return MemoryConfig(
        name=name,
        storage_path=str(path),
        embedding_dim=dim,
        cache_config=CacheConfig(max_entries=max_entries),
        **settings,
    )


@pytest.fixture
def cfg(name, tmp_path):
    return l2_config(name, tmp_path, 64)


def _fill(mem, data, ns="docs"):
    for i, v in enumerate(data):
        mem.put(ns, f"d{i}", i, embedding=v)


def _recall(mem, data, queries, k=10, ns="docs"):
    truth = exact_cosine_topk(data, queries, k)
    found = 0
    for q, t in zip(queries, truth, strict=True):
        got = {int(h.key[1:]) for h in mem.search_similar(ns, q, top_k=k)}
        found += len(got & set(t.tolist()))
    return found / (k * len(queries))


def test_recall_at_10_on_clustered_vectors(cfg):
    data = clustered(20_000, 64)
    queries = clustered(200, 64, seed=1)
    with MemorySystem.open(cfg) as mem:
        _fill(mem, data)
        recall = _recall(mem, data, queries)
        mem.unlink()
    print(f"recall@10 clustered 20k x 64-d at default ef: {recall:.4f}")
    assert recall >= 0.95


def test_recall_on_uniform_vectors_is_reported(cfg):
    rng = np.random.default_rng(3)
    data = rng.random((5_000, 64), dtype=np.float32)
    with MemorySystem.open(cfg) as mem:
        _fill(mem, data)
        recall = _recall(mem, data, rng.random((100, 64), dtype=np.float32))
        high_ef = (
            sum(
                len({int(h.key[1:]) for h in mem.search_similar("docs", q, top_k=10, ef=400)} & set(t.tolist()))
                for q, t in zip(data[:50], exact_cosine_topk(data, data[:50], 10), strict=True)
            )
            / 500
        )
        mem.unlink()
    print(f"recall@10 uniform 5k x 64-d: default ef {recall:.4f}, ef=400 {high_ef:.4f}")
    assert recall > 0.5 and high_ef >= recall - 0.05


def test_namespaces_deletes_and_replacements_never_leak(cfg):
    data = clustered(2_000, 64)
    with MemorySystem.open(cfg) as mem:
        _fill(mem, data[:1000], ns="mine")
        _fill(mem, data[1000:], ns="theirs")
        for i in range(0, 1000, 3):
            mem.delete("mine", f"d{i}")
        for q in data[:100]:
            hits = mem.search_similar("mine", q, top_k=10)
            assert hits and all(h.namespace == "mine" and int(h.key[1:]) % 3 != 0 for h in hits)
        # Replacing an embedding moves the key: its old vector is never returned.
        mem.put("mine", "d1", "moved", embedding=data[1500])
        assert "d1" not in {h.key for h in mem.search_similar("mine", data[1], top_k=5)}
        assert mem.search_similar("mine", data[1500], top_k=1)[0].key == "d1"
        both = {h.namespace for h in mem.search_similar(None, data[1], top_k=50)}
        assert both <= {"mine", "theirs"}
        assert mem.search_similar("nobody", data[0]) == []
        hit = mem.search_similar("mine", data[1500], top_k=1, with_values=True)[0]
        assert hit.value == "moved"
        np.testing.assert_array_equal(mem.embedding("mine", "d1"), data[1500])
        assert not mem.embedding("mine", "d1").flags.writeable
        assert mem.embedding("mine", "d0") is None
        mem.unlink()


def test_restart_loads_the_saved_index_and_catches_up(cfg):
    data = clustered(3_000, 64)
    queries = data[::97]
    # A local index: a serving process would index the writer's records as they come.
    with MemorySystem.open(cfg, index_sharing="local") as first:
        _fill(first, data[:2000])
        first.search_similar("docs", data[0])  # builds this process's index
        with MemorySystem.open(cfg) as writer:
            _fill_range = range(2000, 3000)
            for i in _fill_range:
                writer.put("docs", f"d{i}", i, embedding=data[i])
        first.close()  # saves the index (2000 records) under storage_path/l2
        with MemorySystem.open(cfg) as second:
            second.l2._ensure_index()
            assert second.l2._saved_upto == 2000  # loaded, not rebuilt
            loaded = [[h.key for h in second.search_similar("docs", q)] for q in queries]
            assert second.l2._indexed_upto == 3000  # the tail was indexed
            fresh = MemorySystem.open(cfg)
            fresh.l2.index = None
            import os

            for f in os.listdir(fresh.l2.dir):
                os.remove(os.path.join(fresh.l2.dir, f))
            fresh.l2.__init__(fresh.system, cfg.path)
            rebuilt = [[h.key for h in fresh.search_similar("docs", q)] for q in queries]
            agree = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(loaded, rebuilt, strict=True)])
            assert agree >= 0.95
            fresh.close()
            second.unlink()


def _search_in_child(name, path, query, out):
    cfg = MemoryConfig(name=name, storage_path=path, embedding_dim=64)
    with MemorySystem.open(cfg) as mem:
        out.put([h.key for h in mem.search_similar("docs", np.asarray(query, np.float32), top_k=1)])


@pytest.mark.multiprocess
def test_vector_put_in_one_process_is_found_in_another(cfg):
    data = clustered(500, 64)
    with MemorySystem.open(cfg) as mem:
        _fill(mem, data)
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        p = ctx.Process(target=_search_in_child, args=(cfg.name, cfg.path, data[123].tolist(), out))
        p.start()
        p.join(120)
        assert p.exitcode == 0
        assert out.get(timeout=5) == ["d123"]
        mem.unlink()


def test_integer_embeddings_are_converted_to_float32(cfg):
    """Integer arrays and lists are numbers: stored as float32, exactly (up to 2**24)."""
    with MemorySystem.open(cfg) as mem:
        ints = np.arange(64, dtype=np.int64) - 32
        mem.put("docs", "i64", 1, embedding=ints)
        mem.put("docs", "u8", 2, embedding=np.arange(64, dtype=np.uint8))
        mem.put("docs", "list", 3, embedding=[int(x) for x in ints[::-1]])
        stored = mem.embedding("docs", "i64")
        assert stored.dtype == np.float32 and np.array_equal(stored, ints.astype(np.float32))
        assert np.array_equal(mem.embedding("docs", "list"), ints[::-1].astype(np.float32))
        assert mem.search_similar("docs", np.arange(64, dtype=np.uint8), top_k=1)[0].key == "u8"
        mem.unlink()


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros(63, np.float32), "embedding_dim is 64"),
        (np.zeros((2, 64), np.float32), "shape"),
        (np.full(64, np.nan, np.float32), "NaN"),
        (np.full(64, np.inf), "NaN or infinite"),
        (np.array(["x"] * 64), "floats"),
        (np.ones(64, bool), "floats"),
        ("not a vector", "numpy array"),
    ],
)
def test_bad_embeddings_store_nothing(cfg, bad, match):
    with MemorySystem.open(cfg) as mem:
        with pytest.raises(InvalidEmbedding, match=match):
            mem.put("docs", "k", "value", embedding=bad)
        assert mem.get("docs", "k") is None
        assert mem.l2.count == 0
        with pytest.raises(InvalidEmbedding):
            mem.search_similar("docs", bad)
        with pytest.raises(ConfigError):
            mem.search_similar("docs", np.zeros(64, np.float32), top_k=0)
        mem.unlink()
