"""One index per system (coordination/search.py): the process holding it answers the others'
searches over two topics. Two handles opened in one process are two members of the system, so
most of the protocol is tested in process; the holder's death and stall use spawned processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time

import numpy as np
import pytest

from nt_memory import MemoryConfig, MemorySystem
from nt_memory.coordination import search as S
from nt_memory.errors import ConfigError, InvalidEmbedding
from nt_memory.shm import coord_layout as C
from tests.multiprocess import search_workers
from tests.multiprocess.test_stalls import _stopped

CTX = mp.get_context("spawn")
DIM = 16


def _data(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(8, DIM)).astype(np.float32)
    return (centers[rng.integers(0, 8, n)] + 0.3 * rng.normal(size=(n, DIM))).astype(np.float32)


@pytest.fixture
def cfg(name, tmp_path):
    return MemoryConfig(name=name, storage_path=str(tmp_path), embedding_dim=DIM)


def _fill(mem, data, ns="docs", prefix="d"):
    for i, v in enumerate(data):
        mem.put(ns, f"{prefix}{i}", i, embedding=v)


def _keys(hits):
    return [(h.namespace, h.key) for h in hits]


def test_a_second_member_is_answered_by_the_holder_and_never_builds_an_index(cfg):
    data = _data(600)
    with MemorySystem.open(cfg) as holder, MemorySystem.open(cfg) as asker:
        _fill(holder, data[:300])
        _fill(asker, data[300:], ns="other")
        local = holder.search_similar("docs", data[5], top_k=5)  # takes the role, builds the index
        assert holder.stats()["l2"]["this_process_serves"]
        served = asker.search_similar("docs", data[5], top_k=5, with_values=True)
        assert _keys(served) == _keys(local)
        assert [h.distance for h in served] == pytest.approx([h.distance for h in local], abs=1e-6)
        assert served[0].value == 5
        assert asker.l2.index is None  # it never held vectors of its own
        st = asker.stats()["l2"]
        assert st["index_holder_pid"] == os.getpid() and not st["this_process_serves"]
        assert st["searches_sent_here"] == 1 and st["remote_overhead_p50_us"] > 0
        # Every namespace, a key prefix, a namespace that has none, many queries at once.
        assert {h.namespace for h in asker.search_similar(None, data[400], top_k=20)} == {"docs", "other"}
        pre = asker.search_similar("other", data[400], top_k=10, key_prefix="d1")
        assert pre and all(h.key.startswith("d1") and h.namespace == "other" for h in pre)
        assert pre == holder.search_similar("other", data[400], top_k=10, key_prefix="d1")
        assert asker.search_similar("nobody", data[0]) == []
        many = asker.search_similar_many("docs", data[:7], top_k=3)
        assert [_keys(h) for h in many] == [_keys(holder.search_similar("docs", q, top_k=3)) for q in data[:7]]
        assert holder.stats()["l2"]["searches_served_here"] >= 5


def test_an_askers_own_puts_are_found_at_once_and_its_ef_is_its_own(cfg):
    data = _data(400, seed=1)
    with MemorySystem.open(cfg) as holder, MemorySystem.open(cfg, index_ef=7) as asker:
        _fill(holder, data[:200])
        holder.search_similar("docs", data[0])
        asker.put("docs", "fresh", "new", embedding=data[300])
        assert asker.search_similar("docs", data[300], top_k=1)[0].key == "fresh"  # read your writes
        holder.l2._ef_set = -1
        asker.search_similar("docs", data[300], top_k=3)
        assert holder.l2._ef_set == 7  # the asker's index_ef, not the holder's 320
        asker.search_similar("docs", data[300], top_k=3, ef=50)
        assert holder.l2._ef_set == 50
        with pytest.raises(ConfigError, match="ef=0"):
            asker.search_similar("docs", data[0], ef=0)
        with pytest.raises(InvalidEmbedding, match="embedding_dim is 16"):
            asker.search_similar("docs", np.zeros(3, np.float32))


def test_a_callable_filter_searches_an_index_of_the_askers_own(cfg):
    data = _data(300, seed=2)
    with MemorySystem.open(cfg) as holder, MemorySystem.open(cfg) as asker:
        _fill(holder, data)
        holder.search_similar("docs", data[0])
        hits = asker.search_similar("docs", data[10], top_k=5, filter=lambda ns, key: int(key[1:]) % 2 == 0)
        assert len(hits) == 5 and all(int(h.key[1:]) % 2 == 0 for h in hits)
        assert asker.l2.index is not None  # a predicate cannot travel: this process built its own


def test_a_request_split_over_many_messages_and_a_reply_split_over_many(cfg, monkeypatch):
    data = _data(500, seed=3)
    with MemorySystem.open(cfg) as holder, MemorySystem.open(cfg) as asker:
        _fill(holder, data)
        holder.search_similar("docs", data[0])
        queries = _data(6000, seed=4)  # 6000 x 64 bytes: more than one request message holds
        want = holder.search_similar_many("docs", queries, top_k=10)
        sent = asker.stats()["l2"]["searches_sent_here"]
        got = asker.search_similar_many("docs", queries, top_k=10)
        assert [_keys(h) for h in got] == [_keys(h) for h in want]
        assert asker.stats()["l2"]["searches_sent_here"] - sent >= 2
        # 6000 queries' hits (10 keys of ~10 bytes each) exceed one reply: the holder split it.
        assert holder.pubsub.topic(S.REPLY_TOPIC).max_message < 6000 * 10 * 18


def test_garbage_on_the_search_topics_is_ignored(cfg):
    data = _data(200, seed=5)
    with MemorySystem.open(cfg) as holder, MemorySystem.open(cfg) as asker:
        _fill(holder, data)
        want = _keys(holder.search_similar("docs", data[3]))
        for junk in (b"", b"\x00" * 7, b"\xff" * 40, {"not": "bytes"}, os.urandom(300)):
            asker.publish(S.REQUEST_TOPIC, junk)
            asker.publish(S.REPLY_TOPIC, junk)
        # A well-formed header with impossible sizes gets an error reply, not a crash.
        bad = S._REQ.pack(asker.system.owner, 10**9, 10, 10, 5, 3, 2) + b"xyz"
        asker.publish(S.REQUEST_TOPIC, bad)
        assert _keys(asker.search_similar("docs", data[3])) == want
        assert holder.stats()["l2"]["search_last_error"] is None
        assert holder.stats()["l2"]["this_process_serves"]


@pytest.mark.parametrize("topic", [S.REQUEST_TOPIC, S.REPLY_TOPIC])
def test_an_asker_the_holder_cannot_hear_searches_locally_instead_of_waiting(cfg, topic):
    """A co-tenant rewrites a word of a search topic's name in the directory: a process that opens
    the topic afterwards makes a second one of that name, and the holder, which opened the first,
    never hears its requests (or sends its replies where it does not listen). The live holder keeps
    beating, so once waited WAIT_S (600 s); the asker sees the holder idle after its request and
    searches an index of its own."""
    data = _data(300, seed=11)
    with MemorySystem.open(cfg) as holder, MemorySystem.open(cfg) as first:
        _fill(holder, data)
        want = _keys(holder.search_similar("docs", data[7]))
        assert _keys(first.search_similar("docs", data[7])) == want  # the holder opened the reply topic
        idx = holder.pubsub._find(topic.encode())
        word = holder.pubsub.entries[idx * C.TOPIC_ENTRY_WORDS + C.TOPIC_NAME_IDX + 1 :][:1]
        saved = int(word[0])
        word[0] = 1
        try:
            with MemorySystem.open(cfg) as late:
                got: list = []
                t = threading.Thread(target=lambda: got.append(_keys(late.search_similar("docs", data[7]))))
                start = time.monotonic()
                t.start()
                t.join(60)
                assert not t.is_alive(), "the search waited for a holder that cannot hear it"
                assert got == [want] and time.monotonic() - start < 30
                st = late.stats()["l2"]
                assert "does not hear" in st["search_last_error"] and late.l2.index is not None
                assert st["searches_sent_here"] == 1
                late.search_similar("docs", data[8])  # searches stay local for a while: nothing sent
                assert late.stats()["l2"]["searches_sent_here"] == 1
        finally:
            word[0] = saved
        assert _keys(first.search_similar("docs", data[7])) == want  # the others were never affected


def test_closing_the_holder_hands_the_role_on_with_the_saved_index(cfg):
    data = _data(400, seed=6)
    holder = MemorySystem.open(cfg)
    try:
        with MemorySystem.open(cfg) as asker:
            _fill(holder, data)
            want = _keys(holder.search_similar("docs", data[9]))
            holder.close()
            assert asker.stats()["l2"]["index_holder_pid"] is None
            assert _keys(asker.search_similar("docs", data[9])) == want
            assert asker.stats()["l2"]["this_process_serves"]
            assert asker.l2._saved_upto == 400  # loaded what the holder saved, nothing rebuilt
    finally:
        holder.close()


def test_local_mode_keeps_an_index_of_its_own_and_never_serves(cfg):
    data = _data(200, seed=7)
    with MemorySystem.open(cfg, index_sharing="local") as alone, MemorySystem.open(cfg) as other:
        _fill(alone, data)
        alone.search_similar("docs", data[0])
        assert not alone.stats()["l2"]["this_process_serves"] and alone.l2.index is not None
        other.search_similar("docs", data[0])
        assert other.stats()["l2"]["this_process_serves"]
    with pytest.raises(ConfigError, match="index_sharing"):
        MemoryConfig(name="x", index_sharing="everyone")


@pytest.mark.multiprocess
@pytest.mark.parametrize("how", ["kill", "stop"])
def test_a_dead_or_stopped_holder_is_replaced_by_the_next_asker(cfg, how, monkeypatch):
    monkeypatch.setattr(S, "STALE_S", 0.5)
    data = _data(400, seed=8)
    parent, child = CTX.Pipe()
    p = CTX.Process(target=search_workers.hold_the_index, args=(cfg.name, cfg.storage_path, DIM, child))
    p.start()
    try:
        assert parent.poll(120) and parent.recv() == "serving"
        with MemorySystem.open(cfg) as asker:
            want = _keys(asker.search_similar("docs", data[4]))  # answered by the child
            assert asker.stats()["l2"]["index_holder_pid"] == p.pid
            os.kill(p.pid, signal.SIGKILL if how == "kill" else signal.SIGSTOP)
            if how == "stop":  # the signal lands a moment later: a spinning holder could answer first
                deadline = time.monotonic() + 10
                while not _stopped(p.pid) and time.monotonic() < deadline:
                    time.sleep(0.001)
            start = time.monotonic()
            assert _keys(asker.search_similar("docs", data[4])) == want
            assert time.monotonic() - start < 60
            st = asker.stats()["l2"]
            assert st["this_process_serves"] and st["search_takeovers_here"] == 1, st
            if how == "stop":
                os.kill(p.pid, signal.SIGCONT)
                parent.send("search")  # the resumed child asks: the new holder answers it
                assert parent.poll(60)
                served, keys, still_indexed = parent.recv()
                assert not served and keys == want and not still_indexed
    finally:
        if p.is_alive():
            os.kill(p.pid, signal.SIGCONT)
            p.kill()
        p.join(10)
