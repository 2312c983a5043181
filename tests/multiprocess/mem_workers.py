"""Workers for MemorySystem tests (spawned; they receive names and paths, never objects)."""

from __future__ import annotations

import random

from nt_memory import CacheConfig, MemoryConfig, MemorySystem


def config(name: str, path: str, max_entries: int = 1000) -> MemoryConfig:
    return MemoryConfig(name=name, storage_path=path, cache_config=CacheConfig(max_entries=max_entries))


def acking_writer(name: str, path: str, conn) -> None:
    """Put forever, acknowledging each returned put through the pipe, until SIGKILLed."""
    mem = MemorySystem.open(config(name, path), label="acking-writer")
    i = 0
    while True:
        mem.put("crash", f"k{i}", {"i": i, "pad": "x" * (i % 300)})
        conn.send(i)
        i += 1


def mixed_writer(name: str, path: str, worker: int, rounds: int, shared_keys: int, result) -> None:
    mem = MemorySystem.open(config(name, path, max_entries=200), label=f"writer-{worker}")
    rnd = random.Random(worker)
    try:
        for r in range(rounds):
            mem.put("own", f"w{worker}-k{r % 50}", r)
            k = rnd.randrange(shared_keys)
            mem.put("shared", f"k{k}", {"worker": worker, "round": r})
            if rnd.random() < 0.1:
                mem.delete("shared", f"k{rnd.randrange(shared_keys)}")
            mem.get("shared", f"k{rnd.randrange(shared_keys)}")
        result.put(worker)
    finally:
        mem.close()


def opener(name: str, path: str, barrier, result) -> None:
    barrier.wait(30)
    mem = MemorySystem.open(config(name, path), label="opener")
    try:
        mem.put("open", f"pid{mem.system.slot}", 1)
        result.put(mem.system.root.creator_pid)
    finally:
        mem.close()
