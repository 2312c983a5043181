"""Workers for the shared-index tests (spawned; they receive names and paths only)."""

from __future__ import annotations

import time

from nt_memory import MemoryConfig, MemorySystem
from nt_memory.coordination.search import POLL_S


def hold_the_index(name: str, path: str, dim: int, conn) -> None:
    """Store the test's 400 vectors, take the search role, then answer whatever is asked."""
    from tests.coordination.test_search_service import _data, _fill, _keys

    mem = MemorySystem.open(MemoryConfig(name=name, storage_path=path, embedding_dim=dim))
    data = _data(400, seed=8)
    _fill(mem, data)
    mem.search_similar("docs", data[0])
    conn.send("serving")
    while True:
        if conn.recv() == "search":
            time.sleep(3 * POLL_S)  # the serving thread, resumed, sees the role is gone
            keys = _keys(mem.search_similar("docs", data[4]))
            st = mem.stats()["l2"]
            conn.send((st["this_process_serves"], keys, mem.l2.index is not None))
