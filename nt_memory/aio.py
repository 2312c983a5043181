"""``AsyncMemorySystem``: the same methods as coroutines; blocking work never blocks the loop.

An L1 hit is a few hundred nanoseconds and is answered inline; anything that may touch LMDB, wait
for the journal or fsync (an L1 miss, a write-through, ``flush``, ``close``) runs in a worker
thread (``asyncio.to_thread``). The synchronous ``MemorySystem`` stays the fast path.
"""

from __future__ import annotations

import asyncio

from nt_memory.config import MemoryConfig
from nt_memory.memory import MemorySystem
from nt_memory.tiers.codec import decode


class AsyncMemorySystem:
    """Wraps a :class:`MemorySystem` (``.sync``) for asyncio code.

    >>> mem = await AsyncMemorySystem.open(MemoryConfig(name="desk1"))   # doctest: +SKIP
    >>> await mem.put("agent_1", "position", {"qty": 10})                # doctest: +SKIP
    >>> await mem.get("agent_1", "position")                             # doctest: +SKIP
    """

    def __init__(self, sync: MemorySystem):
        self.sync = sync

    @classmethod
    async def open(cls, config: MemoryConfig | None = None, **kwargs) -> AsyncMemorySystem:
        return cls(await asyncio.to_thread(MemorySystem.open, config, **kwargs))

    async def get(self, namespace, key, default=None):
        mem = self.sync
        kb = mem.l1.key_bytes(namespace, key)
        h = mem.l1.hash_bytes(kb)
        found = mem.l1.get_encoded(kb, h)  # an L1 hit is answered inline
        if not isinstance(found, int):
            return decode(found)
        return await asyncio.to_thread(mem.read_lower, found, h, kb, default)

    async def put(self, namespace, key, value, ttl=None, embedding=None) -> None:
        if not self.sync.put_nowait(namespace, key, value, ttl, embedding):
            await asyncio.to_thread(self.sync.put, namespace, key, value, ttl, embedding)

    async def delete(self, namespace, key) -> None:
        await asyncio.to_thread(self.sync.delete, namespace, key)

    async def flush(self, timeout: float = 30.0) -> None:
        await asyncio.to_thread(self.sync.flush, timeout)

    async def stats(self) -> dict:
        return await asyncio.to_thread(self.sync.stats)

    async def close(self) -> None:
        await asyncio.to_thread(self.sync.close)

    def unlink(self) -> None:
        self.sync.unlink()

    async def __aenter__(self) -> AsyncMemorySystem:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
