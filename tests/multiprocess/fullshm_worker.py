"""Run inside a private mount namespace whose /dev/shm is a small tmpfs (see test_full_shm.py):
an embedding put that needs a new chunk of the embedding log finds no room. Prints one JSON line."""

from __future__ import annotations

import json
import sys

import numpy as np

from nt_memory import CacheConfig, MemoryConfig, MemorySystem
from nt_memory.errors import CapacityError


def main(path: str) -> int:
    cfg = MemoryConfig(
        name="fullshm", storage_path=path, journal_bytes=1 << 20, cache_config=CacheConfig(max_entries=256)
    )
    out = {}
    with MemorySystem.open(cfg) as mem:
        try:
            mem.put("ns", "k", {"v": 1}, embedding=np.ones(cfg.embedding_dim))
            out["raised"] = None
        except CapacityError as exc:
            out["raised"] = type(exc).__name__
            out["message"] = str(exc)
        out["l1_or_journal"] = mem.get("ns", "k")
        mem.flush()
        out["l3"] = mem.store.kv_get(b"ns\0k") is not None
        out["l3_embedding"] = mem.store.get("embeddings", b"ns\0k") is not None
        out["hits"] = [h.key for h in mem.search_similar("ns", np.ones(cfg.embedding_dim))]
        out["log_records"] = mem.l2.count
        mem.put("ns", "plain", 2)  # a put that needs no new shared memory still works
        out["plain"] = mem.get("ns", "plain")
        mem.unlink()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
