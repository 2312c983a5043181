"""Lifecycle habits: a closed handle raises and never crashes, a forked child cannot use its
parent's handles (and leaves the parent's LMDB readers and member slot alone), handles pickle by
name, and a half-built object can always close() and repr()."""

from __future__ import annotations

import multiprocessing as mp
import pickle
import subprocess
import sys
import textwrap

import pytest

from nt_memory import HotCache, MemoryConfig, MemorySystem
from nt_memory.shm.system import System

CTX = mp.get_context("spawn")


def _run(script: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """A script in its own interpreter: a segfault there is a return code here, not a dead suite."""
    return subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_every_verb_of_a_closed_system_raises_segment_closed(name, tmp_path):
    r = _run(
        f"""
        from nt_memory import MemoryConfig, MemorySystem, SegmentClosed
        m = MemorySystem.open(MemoryConfig(name={name!r}, storage_path={str(tmp_path)!r}))
        token = m.acquire_lock("a"); m.release_lock(token)
        token = m.acquire_lock("b")
        sub = m.subscribe("t")
        m.put("ns", "k", b"v")
        m.close()
        verbs = dict(
            get=lambda: m.get("ns", "k"), put=lambda: m.put("ns", "k", b"x"), put_json=lambda: m.put("ns", "k", 1),
            delete=lambda: m.delete("ns", "k"), acquire_lock=lambda: m.acquire_lock("a"),
            release_lock=lambda: m.release_lock(token), lock=lambda: m.lock("a").__enter__(),
            publish=lambda: m.publish("t", b"x"), subscribe=lambda: m.subscribe("t"),
            recv=lambda: sub.recv(0), try_recv=lambda: sub.try_recv(), stats=lambda: m.stats(),
            search=lambda: m.search_similar("ns", [0.0] * m.embedding_dim),
        )
        for verb, call in verbs.items():
            try:
                call()
                print(verb, "returned")
            except SegmentClosed as exc:
                print(verb, "SegmentClosed")
            except Exception as exc:
                print(verb, type(exc).__name__, exc)
        print(repr(m))
        m.unlink()
        """
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 14 and lines[-1].endswith("closed>"), r.stdout
    for line in lines[:-1]:
        assert line.endswith(" SegmentClosed"), line


def test_a_forked_child_cannot_use_its_parents_handles(name, tmp_path):
    r = _run(
        f"""
        import os, lmdb
        from nt_memory import HotCache, MemoryConfig, MemorySystem, SegmentClosed
        m = MemorySystem.open(MemoryConfig(name={name!r}, storage_path={str(tmp_path)!r}))
        m.put("ns", "k", b"parent")
        m.flush()
        cache = HotCache.attach({name!r})
        members = len(m.system.members.members())
        read = m.store.env.begin()  # a long-lived reader of the parent's: the child must not clear it
        assert read.get(b"x") is None
        pid = os.fork()
        if pid == 0:
            out = []
            for verb, call in dict(
                get=lambda: m.get("ns", "k"), put=lambda: m.put("ns", "k", b"child"),
                lock=lambda: m.acquire_lock("a"), publish=lambda: m.publish("t", b"x"),
                cache_get=lambda: cache.get("ns", "k"), stats=lambda: m.stats(),
            ).items():
                try:
                    call()
                    out.append(f"{{verb}} returned")
                except SegmentClosed as exc:
                    out.append(f"{{verb}} {{'reopen by name' in str(exc) and str(os.getppid()) in str(exc)}}")
            m.close(); cache.close()  # nothing shared may be touched
            out.append(repr(m))
            again = HotCache.attach({name!r})  # shared memory reattaches by name in the child
            out.append("reattached " + again.get("ns", "k").decode())
            again.close()
            try:  # LMDB cannot: the inherited environment must stay untouched
                MemorySystem.open(MemoryConfig(name={name!r}, storage_path={str(tmp_path)!r}))
            except Exception as exc:
                out.append(f"reopen refused {{'spawn' in str(exc)}}")
            print("\\n".join(out), flush=True)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert status == 0, status
        print("parent", m.get("ns", "k").decode(), len(m.system.members.members()) == members)
        print("reader", str(os.getpid()) in m.store.env.readers())  # the child left the slot alone
        read.abort()
        t = m.acquire_lock("a"); m.release_lock(t)
        cache.close(); m.close(); m.unlink()
        print("parent closed")
        """
    )
    assert r.returncode == 0, r.stderr + r.stdout
    lines = r.stdout.splitlines()
    verbs = [line for line in lines if line.split()[0] in ("get", "put", "lock", "publish", "cache_get", "stats")]
    assert verbs and all(line.endswith(" True") for line in verbs), r.stdout
    assert any("forked from pid" in line for line in lines), r.stdout
    assert "reattached parent" in lines and "reopen refused True" in lines, r.stdout
    assert "parent parent True" in lines and "reader True" in lines and lines[-1] == "parent closed", r.stdout


def _read_pickled(blob: bytes, out) -> None:
    mem = pickle.loads(blob)
    try:
        out.put(mem.get("ns", "k"))
    finally:
        mem.close()


def test_memory_system_pickles_by_name_into_another_process(name, tmp_path):
    with MemorySystem.open(MemoryConfig(name=name, storage_path=str(tmp_path))) as mem:
        mem.put("ns", "k", {"qty": 10})
        blob = pickle.dumps(mem)
        assert len(blob) < 2000  # the config, not the data
        out = CTX.Queue()
        p = CTX.Process(target=_read_pickled, args=(blob, out))
        p.start()
        try:
            assert out.get(timeout=120) == {"qty": 10}
        finally:
            p.join(30)
        mem.unlink()


def test_hot_cache_pickles_by_name(name):
    cache = HotCache.create(name, max_entries=16)
    try:
        cache.put("ns", "k", b"v")
        other = pickle.loads(pickle.dumps(cache))
        assert other is not cache and other.get("ns", "k") == b"v"
        other.close()
    finally:
        cache.close()
        cache.unlink()


@pytest.mark.parametrize("cls", [MemorySystem, HotCache, System])
def test_a_half_built_object_can_close_and_repr(cls):
    obj = cls.__new__(cls)
    assert "?" in repr(obj)
    obj.close()
    obj.close()


def test_a_system_that_fails_to_build_leaves_no_member_behind(name, tmp_path):
    with MemorySystem.open(MemoryConfig(name=name, storage_path=str(tmp_path / "a"))) as mem:
        before = len(mem.system.members.members())
        with pytest.raises(Exception, match="storage_path"):
            MemorySystem.open(MemoryConfig(name=name, storage_path=str(tmp_path / "b")))
        assert len(mem.system.members.members()) == before
        mem.unlink()
