"""Index parameters, ``ef`` as passed, filters inside the search, many queries in one call."""

from __future__ import annotations

import numpy as np
import pytest

from nt_memory import MemoryConfig, MemorySystem
from nt_memory.errors import ConfigError, InvalidEmbedding
from tests.tiers.test_l2 import clustered, l2_config

DIM = 16


@pytest.fixture
def cfg(name, tmp_path):
    return l2_config(name, tmp_path, DIM, 20_000, index_m=8, index_ef_construction=64, index_ef=50)


@pytest.fixture
def filled(cfg):
    """600 vectors in namespace "a" (keys a0..), 1,400 in "b" (keys b0..; b0-b99 also "hot-")."""
    data = clustered(2000, DIM, clusters=20, seed=4)
    with MemorySystem.open(cfg) as mem:
        for i, v in enumerate(data):
            ns, key = ("a", f"a{i}") if i < 600 else ("b", f"{'hot-' if i < 700 else ''}b{i}")
            mem.put(ns, key, i, embedding=v)
        yield mem, data
        mem.unlink()


@pytest.mark.parametrize(
    "field, bad",
    [("index_m", 1), ("index_m", 101), ("index_ef_construction", 0), ("index_ef", 0), ("index_ef", 10**6)],
)
def test_index_settings_are_validated_by_name(name, tmp_path, field, bad):
    with pytest.raises(ConfigError, match=field):
        MemoryConfig(name=name, storage_path=str(tmp_path), **{field: bad})


def test_the_index_is_built_with_the_configured_m_and_ef_construction(filled):
    mem, data = filled
    mem.search_similar("a", data[0])
    assert (mem.l2.index.M, mem.l2.index.ef_construction) == (8, 64)
    assert mem.l2.index.ef == 50  # index_ef, this process's default


def test_an_attacher_asking_for_another_m_is_refused(filled, cfg):
    import dataclasses

    with pytest.raises(ConfigError, match="index_m"):
        MemorySystem.open(dataclasses.replace(cfg, index_m=12))


def test_a_saved_index_of_other_parameters_is_rebuilt_not_loaded(cfg):
    import dataclasses

    data = clustered(300, DIM, seed=5)
    with MemorySystem.open(cfg) as mem:
        for i, v in enumerate(data):
            mem.put("a", f"a{i}", i, embedding=v)
        mem.search_similar("a", data[0])
        assert mem.l2.save()
        mem.unlink()
    # The same storage after a reboot, created again with another M: the saved file is not used.
    other = dataclasses.replace(cfg, index_m=24)
    with MemorySystem.open(other) as mem:
        assert [h.key for h in mem.search_similar("a", data[7], top_k=1)] == ["a7"]
        assert mem.l2.index.M == 24
        mem.unlink()


def test_ef_is_what_the_caller_passed_even_beside_other_namespaces(filled):
    mem, data = filled
    mem.search_similar("a", data[0], top_k=10, ef=12)
    assert mem.l2.index.ef == 12
    mem.search_similar("b", data[900], top_k=10, ef=3)
    assert mem.l2.index.ef == 10  # hnswlib needs ef >= top_k: raised to it, and only then
    mem.search_similar(None, data[0], top_k=5)
    assert mem.l2.index.ef == 50


def test_a_namespace_gets_top_k_of_its_own_however_few_it_holds(filled):
    mem, data = filled
    # Query from b's region: "a" holds 30% of the index, and its hits come from inside the search.
    for q in data[1000:1010]:
        hits = mem.search_similar("a", q, top_k=10, ef=10)
        assert len(hits) == 10 and {h.namespace for h in hits} == {"a"}


def test_key_prefix_and_filter_restrict_inside_the_search(filled):
    mem, data = filled
    hits = mem.search_similar("b", data[650], top_k=10, key_prefix="hot-")
    assert len(hits) == 10 and all(h.key.startswith("hot-") for h in hits)
    assert hits[0].key == "hot-b650"

    def even(ns, key):
        return int(key.rsplit("b", 1)[1] if ns == "b" else key[1:]) % 2 == 0

    hits = mem.search_similar(None, data[651], top_k=10, filter=even)
    assert len(hits) == 10 and all(int(h.key.rsplit("b", 1)[-1].lstrip("a")) % 2 == 0 for h in hits)
    assert "hot-b651" not in {h.key for h in hits}
    # a filter is exact: what it rejects never comes back, whatever top_k
    assert mem.search_similar("a", data[0], top_k=5, filter=lambda ns, key: False) == []


def test_a_filter_that_raises_raises_to_the_caller_and_nothing_changes(filled):
    mem, data = filled

    def boom(ns, key):
        raise ValueError("filter failed")

    with pytest.raises(ValueError, match="filter failed"):
        mem.search_similar("a", data[0], filter=boom)
    assert mem.search_similar("a", data[3], top_k=1)[0].key == "a3"
    with pytest.raises(ConfigError, match="filter"):
        mem.search_similar("a", data[0], filter="a*")
    with pytest.raises(ConfigError, match="key_prefix"):
        mem.search_similar("a", data[0], key_prefix=b"a")


def test_many_queries_in_one_call_answer_as_one_at_a_time(filled):
    mem, data = filled
    qs = data[[3, 250, 640, 1500, 1999]] + 0.01
    for ns, kw in ((None, {}), ("b", {}), ("b", {"key_prefix": "hot-"})):
        many = mem.search_similar_many(ns, qs, top_k=7, ef=80, **kw)
        one = [mem.search_similar(ns, q, top_k=7, ef=80, **kw) for q in qs]
        assert [[h.key for h in hs] for hs in many] == [[h.key for h in hs] for hs in one]
    view = mem.namespace("agent_1")
    view.put("k", 1, embedding=data[3])
    assert [h.key for h in view.search_similar_many(qs[:1], top_k=1)[0]] == ["k"]
    with pytest.raises(InvalidEmbedding, match="2-D"):
        mem.search_similar_many("a", data[0])
    with pytest.raises(InvalidEmbedding):
        mem.search_similar_many("a", np.zeros((2, DIM + 1), np.float32))
