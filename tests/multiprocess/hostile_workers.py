"""A co-tenant that rewrites shared words, and the battery of operations that must survive it.

Spawned; receives names and paths, never objects. ``corrupt_and_operate`` attaches first (so the
handle's private sizes are the validated ones), then for each case writes the hostile value, runs
every kind of operation, restores the word and reports. Errors from operations are expected and
counted; a signal or a hang is what the test catches.
"""

from __future__ import annotations

import mmap
import os
import struct

import numpy as np

from nt_memory import MemoryConfig, MemorySystem, Proposal, Vote
from nt_memory.shm import owned
from nt_memory.shm.segment import SHM_DIR
from nt_memory.tiers import journal as journal_mod

DIM = 8


def config(name: str, path: str) -> MemoryConfig:
    from nt_memory import CacheConfig

    return MemoryConfig(
        name=name,
        storage_path=path,
        embedding_dim=DIM,
        journal_bytes=1 << 20,
        cache_config=CacheConfig(max_entries=256, arena_bytes=1 << 20),
    )


def populate(name: str, path: str) -> None:
    """Fill every structure, then leave it in shared memory (and LMDB)."""
    mem = MemorySystem.open(config(name, path), label="populate")
    rng = np.random.default_rng(1)
    for i in range(64):
        mem.put("ns", f"k{i}", {"i": i, "pad": "x" * (i * 7)})
    for i in range(16):
        mem.put("vec", f"v{i}", i, embedding=rng.normal(size=DIM))
    for i in range(8):
        mem.put("big", f"b{i}", os.urandom(3000))
    sub = mem.subscribe("t/a")
    for i in range(20):
        mem.publish("t/a", {"i": i})
    sub.close()
    with mem.lock("res", timeout=1):
        pass
    mem.consensus.register_voter("a", 1.0)
    mem.consensus.register_voter("b", 1.0)
    pid = mem.consensus.submit_proposal(Proposal("a", {"x": 1}, quorum=0.9))
    mem.consensus.vote(Vote(pid, "a", approve=True))
    mem.journal.stop()
    for i in range(32):  # no flusher any more: these records stay in the journal as targets
        mem.put("tail", f"t{i}", {"i": i})
    mem.system.close()


class _Word:
    def __init__(self, part_file: str, offset: int):
        fd = os.open(os.path.join(SHM_DIR, part_file), os.O_RDWR)
        try:
            self.mm = mmap.mmap(fd, 0)
        finally:
            os.close(fd)
        self.offset = offset

    def read(self) -> int:
        return struct.unpack_from("<q", self.mm, self.offset)[0]

    def write(self, value: int) -> None:
        struct.pack_into("<q", self.mm, self.offset, value)


def battery(mem: MemorySystem, rng) -> int:
    """Every kind of operation once; returns how many raised (any exception is allowed)."""
    ops = [
        lambda: mem.get("ns", f"k{rng.integers(64)}"),
        lambda: mem.get("ns", "absent"),
        lambda: mem.get("big", f"b{rng.integers(8)}"),
        lambda: mem.put("ns", f"k{rng.integers(64)}", {"new": 1}),
        lambda: mem.put("ns", f"n{rng.integers(1000)}", b"x" * int(rng.integers(1, 2000))),
        lambda: mem.delete("ns", f"k{rng.integers(64)}"),
        lambda: mem.put("vec", f"v{rng.integers(16)}", 1, embedding=rng.normal(size=DIM)),
        lambda: mem.search_similar("vec", rng.normal(size=DIM), top_k=3),
        lambda: mem.search_similar(None, rng.normal(size=DIM), top_k=3, with_values=True),
        lambda: mem.embedding("vec", "v1"),
        lambda: mem.publish("t/a", {"x": 1}),
        lambda: mem.subscribe("t/a").try_recv(),
        lambda: mem.subscribe("t/b").recv(timeout=0.01),
        lambda: mem.release_lock(mem.acquire_lock("res", timeout=0.05, lease=1)),
        lambda: mem.release_lock(mem.acquire_lock(f"l{rng.integers(5)}", timeout=0.05)),
        lambda: mem.consensus.result("1"),
        lambda: mem.consensus.submit_proposal(Proposal("a", None, quorum=0.5)),
        lambda: mem.consensus.vote(Vote("1", "b", approve=False)),
        lambda: mem.keys("ns"),
        lambda: mem.flush(timeout=0.2),
        lambda: mem.stats(),
        lambda: mem.l1.recover(),
        lambda: mem.l1.rehash(),
        lambda: len(mem.l1),
        lambda: ("ns", "k3") in mem.l1,
    ]
    errors = 0
    for op in ops:
        try:
            op()
        except Exception:  # noqa: BLE001 - an error is an acceptable answer to hostile memory
            errors += 1
    return errors


def corrupt_and_operate(name: str, path: str, cases, conn) -> None:
    """``cases``: [(part file, byte offset, value, label)]. Reports ("case", i, errors) after each."""
    owned.STALL_TIMEOUT_S = 0.2  # stalled holders are reported quickly: many cases make some
    journal_mod.ROOM_TIMEOUT_S = 0.2
    rng = np.random.default_rng(7)
    mem = MemorySystem.open(config(name, path), label="victim")
    mem.journal.stop()  # this test drives every operation itself
    words = {}
    try:
        for i, (part, offset, value, _label) in enumerate(cases):
            w = words.get((part, offset)) or words.setdefault((part, offset), _Word(part, offset))
            saved = w.read()
            w.write(value)
            try:
                errors = battery(mem, rng)
                try:
                    fresh = MemorySystem.open(config(name, path), label="fresh", timeout=0.5)
                except Exception:  # noqa: BLE001 - refusing a damaged system is the right answer
                    errors += 1
                else:
                    errors += battery(fresh, rng)
                    try:
                        fresh.close()
                    except Exception:  # noqa: BLE001
                        errors += 1
            finally:
                w.write(saved)
            conn.send(("case", i, errors))
    finally:
        conn.send(("done", len(cases), 0))
