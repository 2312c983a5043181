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


KC_KEYS = 16
KC_DIM = 8


def kc_config(name: str, path: str) -> MemoryConfig:
    return MemoryConfig(name=name, storage_path=path, embedding_dim=KC_DIM, cache_config=CacheConfig(max_entries=64))


_KC_BLOCK = random.Random(7).randbytes(60_000)


def kc_value(k: int, n: int, size: int) -> bytes:
    """Key number, write number, a body, and an xxh3 of all of it: a mix of two writes (which
    differ in their numbers) fails to verify. Cheap to make, so the writer spends its time writing."""
    import xxhash

    body = k.to_bytes(4, "little") + n.to_bytes(8, "little") + _KC_BLOCK[:size]
    return body + xxhash.xxh3_64_intdigest(body).to_bytes(8, "little")


def kc_parse(v: bytes) -> tuple[int, int] | None:
    import xxhash

    if not isinstance(v, bytes) or len(v) < 20 or xxhash.xxh3_64_intdigest(v[:-8]) != int.from_bytes(v[-8:], "little"):
        return None
    return int.from_bytes(v[:4], "little"), int.from_bytes(v[4:12], "little")


def kill_consistency_writer(name: str, path: str, conn, seed: int, start: int) -> None:
    """Overwrite a few keys with large values (long copies: kills land inside writes), some with
    embeddings (the stripe is held across Python code), some in batches (``put_many``: one
    compiled call for several keys), acknowledging each returned put, until SIGKILLed. Write
    numbers start at ``start`` so rounds never reuse one."""
    import numpy as np

    mem = MemorySystem.open(kc_config(name, path), label="kc-writer")
    rnd = random.Random(seed)
    n = start
    conn.send(("ready", 0, 0))
    while True:
        op = rnd.random()
        if op >= 0.85:  # a batch of distinct keys, announced and acknowledged together
            batch = []
            for k in rnd.sample(range(KC_KEYS), rnd.randint(2, 6)):
                n += 1
                batch.append((k, n))
            conn.send(("will", batch))
            mem.put_many("kc", [(f"k{k}", kc_value(k, m, rnd.choice((8_000, 20_000)))) for k, m in batch])
            conn.send(("ack", batch))
            continue
        k = rnd.randrange(KC_KEYS)
        n += 1
        value = kc_value(k, n, rnd.choice((20_000, 40_000, 60_000)))
        done = -n if 0.5 <= op < 0.525 else n  # a negative number: a delete
        # Announced first: after a kill, only the announced operation may have run unacknowledged.
        conn.send(("will", [(k, done)]))
        if op < 0.5:
            mem.put("kc", f"k{k}", value, embedding=np.full(KC_DIM, float(n % 97) + 1.0))
        elif done < 0:
            mem.delete("kc", f"k{k}")
        else:
            mem.put("kc", f"k{k}", value)
        conn.send(("ack", [(k, done)]))


def open_and_idle(name: str, path: str, conn, durability: str = "write-behind") -> None:
    """Open (the first to open is the flusher), say so, then idle until killed."""
    import time

    mem = MemorySystem.open(MemoryConfig(name=name, storage_path=path, durability=durability), label="idler")
    deadline = time.monotonic() + 10
    while not mem.journal.is_flusher() and time.monotonic() < deadline:
        time.sleep(0.01)  # the system thread takes the role as it starts
    conn.send(("ready", mem.journal.is_flusher()))
    while True:
        time.sleep(1)


def acking_putter(name: str, path: str, n: int, durability: str, conn) -> None:
    """Put ``n`` keys with ``durability``, acknowledging each returned put; then idle (open)."""
    import time

    mem = MemorySystem.open(MemoryConfig(name=name, storage_path=path, durability=durability), label="putter")
    for i in range(n):
        mem.put("dur", f"k{i}", {"i": i})
        conn.send(i)
    conn.send("done")
    while True:
        time.sleep(1)
