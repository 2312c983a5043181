"""``AsyncMemorySystem``: every method of :class:`MemorySystem` as a coroutine; nothing blocks the loop.

    async with AsyncMemorySystem.open(MemoryConfig(name="desk1")) as mem:   # or: mem = await ...open(...)
        await mem.put("agent_1", "position", {"qty": 10})
        sub = await mem.subscribe("agent_1/updates")
        await mem.publish("agent_1/updates", {"px": 101.5})
        msg = await sub.recv(timeout=1.0)          # or: async for msg in sub
        async with mem.lock("book", timeout=1.0) as token:
            ...

Three kinds of call:

- **Inline** (microseconds, no wait): an L1 hit, a journaled put with room, publish, release and
  extend of a lock, a receive that finds a message. Answered in the loop's thread.
- **Waits** (a message, a lock, a consensus decision): the wait is the synchronous one's, written
  once as a generator (``nt_memory.shm.wait``); a coroutine sleeps in it through the process's
  waker thread, which signals the loop's self-pipe. No thread per wait, and cancelling a wait at
  any await point loses nothing (the waker never consumes a message or takes a lock: the coroutine
  does, in the loop's thread).
- **Storage** (anything that may read or write LMDB, fsync or wait for the flusher: an L1 miss, a
  scan, a sync put, flush, search, the ReasoningBank): a worker thread (``asyncio.to_thread``).

The synchronous ``MemorySystem`` (``.sync``) stays the fast path and is shared: both can be used.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Generator, Iterable
from typing import Any

import numpy as np

from nt_memory.config import MemoryConfig
from nt_memory.coordination.consensus import Consensus, ConsensusResult, Proposal, Vote
from nt_memory.coordination.locks import LockToken
from nt_memory.coordination.namespaces import NamespaceView
from nt_memory.coordination.pubsub import PatternSubscription, Subscription
from nt_memory.memory import MemorySystem
from nt_memory.tiers.codec import decode
from nt_memory.tiers.l2 import Hit
from nt_memory.values import Duration, Key, Value

_MISSING = object()


async def _thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


class AsyncSubscription:
    """A subscription for coroutines: ``await sub.recv(timeout)``, ``async for msg in sub``,
    ``try_recv()``, ``received``/``dropped`` (exact, as for the sync one), ``close()``."""

    def __init__(self, sub: Subscription | PatternSubscription):
        self.sync = sub

    @property
    def received(self) -> int:
        return self.sync.received

    @property
    def dropped(self) -> int:
        return self.sync.dropped

    @property
    def closed(self) -> bool:
        return self.sync.closed

    def try_recv(self) -> Any:
        """The next message (``(topic, message)`` for a pattern), or None: never waits."""
        return self.sync.try_recv()

    async def recv(self, timeout: Duration | None = None) -> Any:
        """The next message; None when ``timeout`` (seconds or timedelta; None: no limit) passes."""
        return await self.sync.arecv(timeout)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self.sync.__aiter__()

    def close(self) -> None:
        self.sync.close()

    async def __aenter__(self) -> AsyncSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class AsyncConsensus:
    """``mem.consensus`` for coroutines: the seed's ``submit_proposal``/``vote``, ``wait`` (which
    sleeps in the waker, not a thread) and ``result``."""

    def __init__(self, consensus: Consensus):
        self.sync = consensus

    async def register_voter(self, agent_id: str, weight: float = 1.0, scope: str = "local") -> None:
        await _thread(self.sync.register_voter, agent_id, weight, scope)

    async def submit_proposal(self, proposal: Proposal, scope: str = "local") -> str:
        return await _thread(self.sync.submit_proposal, proposal, scope)

    async def vote(self, vote: Vote) -> ConsensusResult:
        return await _thread(self.sync.vote, vote)

    async def result(self, proposal_id: str) -> ConsensusResult:
        return await _thread(self.sync.result, proposal_id)

    async def wait(self, proposal_id: str, timeout: Duration | None = None) -> ConsensusResult:
        if self.sync.scope_of(proposal_id) is not None:
            return await _thread(self.sync.wait, proposal_id, timeout)  # polls the cluster
        return await self.sync.wait_async(proposal_id, timeout)

    async def proposal_ids(self) -> list[str]:
        return await _thread(self.sync.proposal_ids)

    async def stats(self) -> dict:
        return await _thread(self.sync.stats)


class AsyncBank:
    """The ReasoningBank for coroutines: each call runs in a worker thread (it reads and writes
    LMDB and the index)."""

    def __init__(self, bank: Any):
        self.sync = bank

    async def track(self, trajectory: Any) -> Any:
        return await _thread(self.sync.track, trajectory)

    async def complete(self, agent_id: str, trajectory_id: str) -> Any:
        return await _thread(self.sync.complete, agent_id, trajectory_id)

    async def retrieve(self, embedding: Any, top_k: int = 3, include_pitfalls: bool = True) -> list:
        return await _thread(self.sync.retrieve, embedding, top_k, include_pitfalls)

    async def trajectories(self, agent_id: str | None = None, completed: bool | None = None) -> list:
        return await _thread(self.sync.trajectories, agent_id, completed)

    async def patterns(self) -> list:
        return await _thread(self.sync.patterns)

    async def distill(self) -> list:
        return await _thread(self.sync.distill)

    async def consolidate(self) -> dict:
        return await _thread(self.sync.consolidate)


class _Opening:
    """What ``AsyncMemorySystem.open`` returns: awaitable (``mem = await ...``) and an async
    context manager (``async with ... as mem``, closed on the way out)."""

    def __init__(self, config: MemoryConfig | None, kwargs: dict[str, Any]):
        self._config = config
        self._kwargs = kwargs
        self._mem: AsyncMemorySystem | None = None

    async def _open(self) -> AsyncMemorySystem:
        return AsyncMemorySystem(await _thread(MemorySystem.open, self._config, **self._kwargs))

    def __await__(self) -> Generator[Any, None, AsyncMemorySystem]:
        return self._open().__await__()

    async def __aenter__(self) -> AsyncMemorySystem:
        self._mem = await self._open()
        return self._mem

    async def __aexit__(self, *exc: object) -> None:
        if self._mem is not None:
            await self._mem.close()


class AsyncMemorySystem:
    """Wraps a :class:`MemorySystem` (``.sync``) for asyncio code; see the module's docstring."""

    def __init__(self, sync: MemorySystem):
        self.sync = sync
        self.consensus = AsyncConsensus(sync.consensus)
        self._bank: AsyncBank | None = None

    @classmethod
    def open(cls, config: MemoryConfig | None = None, **kwargs: Any) -> _Opening:
        """Open (create or attach) like :meth:`MemorySystem.open`: ``await`` it, or ``async with`` it."""
        return _Opening(config, kwargs)

    @property
    def name(self) -> str:
        return self.sync.name

    @property
    def closed(self) -> bool:
        return self.sync.closed

    # ------------------------------------------------------------------------------------ reads
    async def get(self, namespace: str, key: Key, default: Any = None) -> Any:
        mem = self.sync
        mem._check_open()
        kb = mem.l1.key_bytes(namespace, key)
        h = mem.l1.hash_bytes(kb)
        found = mem.l1.read_encoded(kb, h)  # an L1 hit is answered inline
        if not isinstance(found, int):
            return decode(found)
        return await _thread(mem.read_lower, found, h, kb, default)

    async def get_consistent(self, namespace: str, key: Key, default: Any = None, timeout: float = 10.0) -> Any:
        """:meth:`MemorySystem.get_consistent` (a round trip to the cluster, in a worker thread)."""
        return await _thread(self.sync.get_consistent, namespace, key, default, timeout)

    async def get_many(self, namespace: str, keys: Iterable[Key], default: Any = None) -> list[Any]:
        """:meth:`MemorySystem.get_many`: the L1 hits inline, the misses in one worker-thread call."""
        mem = self.sync
        mem._check_open()
        if isinstance(keys, str | bytes):
            return await _thread(mem.get_many, namespace, keys)  # raises its ConfigError
        out: list = []
        misses: list[tuple[int, int, int, bytes]] = []
        for key in keys:
            kb = mem.l1.key_bytes(namespace, key)
            h = mem.l1.hash_bytes(kb)
            found = mem.l1.read_encoded(kb, h)
            if isinstance(found, int):
                misses.append((len(out), found, h, kb))
                out.append(default)
            else:
                out.append(decode(found))
        if misses:
            lower = await _thread(lambda: [mem.read_lower(r, h, kb, default) for _, r, h, kb in misses])
            for (i, *_), value in zip(misses, lower, strict=True):
                out[i] = value
        return out

    async def exists(self, namespace: str, key: Key) -> bool:
        return await self.get(namespace, key, _MISSING) is not _MISSING

    async def ttl(self, namespace: str, key: Key) -> float | None:
        return await _thread(self.sync.ttl, namespace, key)

    async def keys(self, namespace: str) -> list[str]:
        return await _thread(self.sync.keys, namespace)

    async def scan(self, namespace: str, prefix: str = "", batch: int = 1024) -> AsyncIterator[str]:
        """:meth:`MemorySystem.scan` as an async iterator: ``batch`` keys per worker-thread call."""
        it = self.sync.scan(namespace, prefix)
        while True:
            keys = await _thread(lambda: [k for _, k in zip(range(batch), it, strict=False)])
            for k in keys:
                yield k
            if len(keys) < batch:
                return

    async def count(self, namespace: str | None = None) -> int:
        return await _thread(self.sync.count, namespace)

    async def embedding(self, namespace: str, key: Key) -> np.ndarray | None:
        return await _thread(self.sync.embedding, namespace, key)

    # ----------------------------------------------------------------------------------- writes
    async def put(
        self,
        namespace: str,
        key: Key,
        value: Value,
        ttl: Duration | None = None,
        embedding: Any = None,
        durability: str | None = None,
    ) -> None:
        """:meth:`MemorySystem.put`: inline when it cannot wait (a journaled write-behind put with
        room in the journal), else in a worker thread."""
        if durability is not None or not self.sync.put_nowait(namespace, key, value, ttl, embedding):
            await _thread(self.sync.put, namespace, key, value, ttl, embedding, durability)

    async def put_nowait(
        self, namespace: str, key: Key, value: Value, ttl: Duration | None = None, embedding: Any = None
    ) -> bool:
        """:meth:`MemorySystem.put_nowait`: the put if it needs no wait, else False (nothing stored)."""
        return self.sync.put_nowait(namespace, key, value, ttl, embedding)

    async def put_many(
        self,
        namespace: str,
        items: Any,
        ttl: Duration | None = None,
        embeddings: Any = None,
        durability: str | None = None,
    ) -> int:
        return await _thread(self.sync.put_many, namespace, items, ttl, embeddings, durability)

    async def delete(self, namespace: str, key: Key, durability: str | None = None) -> None:
        await _thread(self.sync.delete, namespace, key, durability)

    async def expire(self, namespace: str, key: Key, ttl: Duration | None) -> bool:
        return await _thread(self.sync.expire, namespace, key, ttl)

    async def incr(self, namespace: str, key: Key, amount: int = 1) -> int:
        return await _thread(self.sync.incr, namespace, key, amount)

    async def compare_and_set(
        self, namespace: str, key: Key, expected: Value | None, new: Value, ttl: Duration | None = None
    ) -> bool:
        return await _thread(self.sync.compare_and_set, namespace, key, expected, new, ttl)

    # --------------------------------------------------------------------------- coordination
    async def publish(self, topic: str, message: Value) -> int:
        return self.sync.publish(topic, message)  # one append into a ring: inline

    async def subscribe(self, topic: str) -> AsyncSubscription:
        return AsyncSubscription(self.sync.subscribe(topic))

    async def psubscribe(self, pattern: str) -> AsyncSubscription:
        """Topics matching a glob; ``recv`` returns ``(topic, message)``."""
        return AsyncSubscription(self.sync.psubscribe(pattern))

    async def acquire_lock(
        self, name: str, timeout: Duration | None = None, lease: Duration | None = None, scope: str = "local"
    ) -> LockToken:
        """Take the named lock; the wait sleeps in the waker, so the loop keeps running. Raises
        ``LockTimeout`` after ``timeout``. ``scope="cluster"``: on every host (a worker thread
        waits for the cluster)."""
        if scope != "local":
            return await _thread(self.sync.acquire_lock, name, timeout, lease, scope)
        return await self.sync.locks.acquire_async(name, timeout, lease)

    async def release_lock(self, token: LockToken) -> None:
        if isinstance(token, LockToken):
            self.sync.release_lock(token)
        else:  # a cluster lock's token: a round trip to the cluster
            await _thread(self.sync.release_lock, token)

    async def extend_lock(self, token: LockToken, lease: Duration | None) -> LockToken:
        if isinstance(token, LockToken):
            return self.sync.extend_lock(token, lease)
        return await _thread(self.sync.extend_lock, token, lease)

    @contextlib.asynccontextmanager
    async def lock(
        self, name: str, timeout: Duration | None = None, lease: Duration | None = None, scope: str = "local"
    ) -> AsyncIterator[LockToken]:
        """``async with mem.lock("book", timeout=1.0) as token:`` ... (released on the way out)."""
        token = await self.acquire_lock(name, timeout, lease, scope)
        try:
            yield token
        finally:
            await self.release_lock(token)

    def namespace(self, agent_id: str) -> AsyncNamespaceView:
        """An agent's view (``swarm/<agent_id>``) with coroutine methods."""
        return AsyncNamespaceView(self, agent_id)

    # ------------------------------------------------------------------------- vectors, bank
    async def search_similar(self, namespace: str | None, query: Any, top_k: int = 10, **kw: Any) -> list[Hit]:
        return await _thread(self.sync.search_similar, namespace, query, top_k, **kw)

    async def search_similar_many(
        self, namespace: str | None, queries: Any, top_k: int = 10, **kw: Any
    ) -> list[list[Hit]]:
        return await _thread(self.sync.search_similar_many, namespace, queries, top_k, **kw)

    async def reindex(self, progress: Callable[[int, int], None] | None = None) -> int:
        return await _thread(self.sync.reindex, progress)

    @property
    def bank(self) -> AsyncBank:
        if self._bank is None:
            self._bank = AsyncBank(self.sync.bank)
        return self._bank

    async def track_trajectory(self, trajectory: Any) -> Any:
        return await _thread(self.sync.track_trajectory, trajectory)

    # --------------------------------------------------------------------------------- lifetime
    async def flush(self, timeout: float = 30.0) -> None:
        await _thread(self.sync.flush, timeout)

    async def stats(self) -> dict:
        return await _thread(self.sync.stats)

    async def verify(self) -> dict[str, list[str]]:
        return await _thread(self.sync.verify)

    async def close(self) -> None:
        await _thread(self.sync.close)

    def unlink(self) -> None:
        self.sync.unlink()

    async def __aenter__(self) -> AsyncMemorySystem:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<AsyncMemorySystem over {self.sync!r}>"


class AsyncNamespaceView:
    """:class:`NamespaceView` with coroutine methods (``amem.namespace("agent_7")``)."""

    def __init__(self, mem: AsyncMemorySystem, agent_id: str):
        self._mem = mem
        self._view = NamespaceView(mem.sync, agent_id)  # validates the id, names the namespace
        self.agent_id = self._view.agent_id
        self.namespace = self._view.namespace

    async def get(self, key: Key, default: Any = None) -> Any:
        return await self._mem.get(self.namespace, key, default)

    async def get_many(self, keys: Iterable[Key], default: Any = None) -> list[Any]:
        return await self._mem.get_many(self.namespace, keys, default)

    async def put(self, key: Key, value: Value, ttl: Duration | None = None, embedding: Any = None) -> None:
        await self._mem.put(self.namespace, key, value, ttl, embedding)

    async def put_many(self, items: Any, ttl: Duration | None = None, embeddings: Any = None) -> int:
        return await self._mem.put_many(self.namespace, items, ttl, embeddings)

    async def delete(self, key: Key) -> None:
        await self._mem.delete(self.namespace, key)

    async def exists(self, key: Key) -> bool:
        return await self._mem.exists(self.namespace, key)

    async def ttl(self, key: Key) -> float | None:
        return await self._mem.ttl(self.namespace, key)

    async def expire(self, key: Key, ttl: Duration | None) -> bool:
        return await self._mem.expire(self.namespace, key, ttl)

    async def incr(self, key: Key, amount: int = 1) -> int:
        return await self._mem.incr(self.namespace, key, amount)

    async def compare_and_set(self, key: Key, expected: Value | None, new: Value, ttl: Duration | None = None) -> bool:
        return await self._mem.compare_and_set(self.namespace, key, expected, new, ttl)

    async def keys(self) -> list[str]:
        return await self._mem.keys(self.namespace)

    def scan(self, prefix: str = "") -> AsyncIterator[str]:
        return self._mem.scan(self.namespace, prefix)

    async def count(self) -> int:
        return await self._mem.count(self.namespace)

    async def search_similar(self, query: Any, top_k: int = 10, **kw: Any) -> list[Hit]:
        return await self._mem.search_similar(self.namespace, query, top_k, **kw)

    async def search_similar_many(self, queries: Any, top_k: int = 10, **kw: Any) -> list[list[Hit]]:
        return await self._mem.search_similar_many(self.namespace, queries, top_k, **kw)

    def __repr__(self) -> str:
        return f"<AsyncNamespaceView {self.namespace!r}>"
