"""Module-level workers for spawned processes: they receive system names, never objects."""

from __future__ import annotations

import os
import random
import struct
import time

import xxhash

from nt_memory.tiers.l1 import HotCache


def checksummed(seed: int, size: int) -> bytes:
    """A value that carries its own checksum: any mix of two writes fails verification."""
    rnd = random.Random(seed)
    body = rnd.randbytes(size)
    return body + struct.pack("<Q", xxhash.xxh3_64_intdigest(body))


def verify(value: bytes) -> bool:
    body, tail = value[:-8], value[-8:]
    return len(value) >= 8 and struct.unpack("<Q", tail)[0] == xxhash.xxh3_64_intdigest(body)


def writer(name: str, nkeys: int, seconds: float, seed: int, result) -> None:
    cache = HotCache.attach(name, label=f"writer-{seed}")
    rnd = random.Random(seed)
    n = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            for _ in range(200):
                k = rnd.randrange(nkeys)
                op = rnd.random()
                if op < 0.8:
                    cache.put("stress", f"k{k}", checksummed(rnd.getrandbits(32), rnd.choice((8, 40, 200, 1500))))
                elif op < 0.9:  # a batch: one compiled call for all of it
                    batch = {f"k{rnd.randrange(nkeys)}": checksummed(rnd.getrandbits(32), 40) for _ in range(8)}
                    cache.put_many("stress", batch)
                else:
                    cache.delete("stress", f"k{k}")
                n += 1
        result.put(("writer", seed, n, 0))
    finally:
        cache.close()


def reader(name: str, nkeys: int, seconds: float, seed: int, result) -> None:
    cache = HotCache.attach(name, label=f"reader-{seed}")
    rnd = random.Random(seed)
    reads = torn = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            for _ in range(500):
                if seed % 2:  # odd readers read in batches (one compiled call each), even ones key by key
                    got = cache.get_many("stress", [f"k{rnd.randrange(nkeys)}" for _ in range(8)])
                else:
                    got = [cache.get("stress", f"k{rnd.randrange(nkeys)}")]
                for v in got:
                    if v is not None:
                        reads += 1
                        if not verify(v):
                            torn += 1
        result.put(("reader", seed, reads, torn))
    finally:
        cache.close()


def kill_target(name: str, nkeys: int, seed: int, ready) -> None:
    """Write as fast as possible until SIGKILLed (announces itself once it is writing)."""
    cache = HotCache.attach(name, label=f"victim-{seed}")
    rnd = random.Random(seed)
    ready.put(os.getpid())
    while True:
        k = rnd.randrange(nkeys)
        op = rnd.random()
        if op < 0.7:
            cache.put("stress", f"k{k}", checksummed(rnd.getrandbits(32), rnd.choice((8, 40, 200, 1500))))
        elif op < 0.85:  # a kill may land inside a compiled batch too
            cache.put_many("stress", [(f"k{(k + i) % nkeys}", checksummed(rnd.getrandbits(32), 200)) for i in range(4)])
        else:
            cache.delete("stress", f"k{k}")
        if rnd.random() < 0.002:
            cache.rehash()
