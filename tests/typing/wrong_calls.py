"""Calls mypy must refuse (tests/test_typing.py): each line with an E comment must be an error."""

from __future__ import annotations

from nt_memory import MemoryConfig, MemorySystem
from nt_memory.aio import AsyncMemorySystem


async def wrong(cfg: MemoryConfig) -> None:
    mem = MemorySystem.open(cfg)
    mem.put("ns", "k", b"v", ttl="soon")  # E: a ttl is seconds or a timedelta
    mem.acquire_lock("book", timeout="1s")  # E: so is a timeout
    mem.incr("ns", "k", 1.5)  # E: incr adds an int
    mem.put("ns", 7, b"v")  # E: a key is str or bytes
    mem.put("ns", "k", object())  # E: not a Value
    mem.expire("ns", "k", ttl=[5])  # E: a ttl is seconds or a timedelta
    amem = await AsyncMemorySystem.open(cfg)
    await amem.put("ns", "k", b"v", ttl="soon")  # E: the async API is typed alike
    mem.subscribe(5)  # E: a topic is a str
