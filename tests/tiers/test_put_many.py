"""``put_many``: the same as a put each, checked as a whole before anything is stored."""

from __future__ import annotations

import numpy as np
import pytest

from nt_memory import CacheConfig, MemoryConfig
from nt_memory.errors import CodecError, ConfigError, InvalidEmbedding, InvalidKey

DIM = 8


@pytest.fixture
def mem_config(name, tmp_path):
    return MemoryConfig(name=name, storage_path=str(tmp_path), embedding_dim=DIM, cache_config=CacheConfig(10_000))


def test_put_many_stores_values_and_embeddings_in_order(mem):
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(300, DIM)).astype(np.float32)
    items = [(f"k{i}", {"i": i}) for i in range(300)] + [("k7", {"i": "again"})]
    assert mem.put_many("obs", items, embeddings=np.vstack([vecs, vecs[:1]])) == 301
    assert mem.get("obs", "k5") == {"i": 5} and mem.get("obs", "k7") == {"i": "again"}  # the later wins
    assert mem.search_similar("obs", vecs[42], top_k=1)[0].key == "k42"
    assert np.array_equal(mem.embedding("obs", "k7"), vecs[0])  # replaced with its row
    assert mem.put_many("obs", {"a": b"x", "b": np.arange(3)}) == 2 and mem.get("obs", "a") == b"x"
    mem.flush()
    assert mem.store.kv_get(mem.l1.key_bytes("obs", "k299")) is not None


@pytest.mark.parametrize("value", [7, b"bytes: the compiled batch stores them all"])
def test_a_sync_batch_is_in_lmdb_when_it_returns(mem, value):
    assert mem.put_many("obs", [(f"s{i}", value) for i in range(50)], durability="sync") == 50
    assert all(mem.store.kv_get(mem.l1.key_bytes("obs", f"s{i}")) is not None for i in range(50))


def test_an_empty_batch_still_checks_its_embeddings(mem):
    with pytest.raises(InvalidEmbedding, match="3 rows for 0 items"):
        mem.put_many("obs", [], embeddings=np.ones((3, DIM)))
    assert mem.put_many("obs", []) == 0


@pytest.mark.parametrize(
    "items, embeddings, error, match",
    [
        ([("a", 1), ("b", object())], None, CodecError, None),
        ([("a", 1), ("b", 2)], np.ones((3, DIM)), InvalidEmbedding, "3 rows for 2 items"),
        ([("a", 1), ("b", 2)], np.ones((2, DIM + 1)), InvalidEmbedding, "shape"),
        ([("a", 1), ("b", 2)], np.array([[1.0] * DIM, [np.nan] * DIM]), InvalidEmbedding, "row 1"),
        ([("a", 1), ("b",)], None, ConfigError, "pairs"),
        ([("a", 1), ("", 2)], None, InvalidKey, None),
    ],
)
def test_bad_input_anywhere_stores_nothing(mem, items, embeddings, error, match):
    mem.put("obs", "kept", 1, embedding=np.ones(DIM))
    with pytest.raises(error, match=match):
        mem.put_many("obs", items, embeddings=embeddings)
    assert mem.get("obs", "a") is None and mem.get("obs", "kept") == 1
    assert [h.key for h in mem.search_similar("obs", np.ones(DIM))] == ["kept"]


def test_the_namespace_view_loads_in_bulk(mem):
    view = mem.namespace("agent_1")
    assert view.put_many({"x": 1, "y": 2}, embeddings=np.eye(2, DIM)) == 2
    assert view.get("y") == 2 and view.search_similar(np.eye(2, DIM)[1], top_k=1)[0].key == "y"
