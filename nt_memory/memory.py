"""``MemorySystem``: the seed's memory system, over shared memory (L1 + journal) and LMDB (L3).

    from nt_memory import MemorySystem, MemoryConfig
    mem = MemorySystem.open(MemoryConfig(name="desk1", storage_path="./data/memory"))
    mem.put("agent_1", "position", {"qty": 10})
    mem.get("agent_1", "position")          # L1 -> unflushed journal -> L3, promoting into L1
    mem.flush(); mem.close()

Durability, exactly: with ``durability="write-behind"`` (the default) a ``put`` returns once its
record is in the shared-memory journal. It then survives the death of every process: the next
process to attach drains it into LMDB. It survives a reboot once it has been flushed, which the
flusher does within milliseconds and ``flush()`` waits for. Without ``flush()``, a reboot loses at
most the unflushed tail. With ``durability="sync"`` a ``put`` returns after LMDB has committed it to
disk.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from nt_memory.config import DURABILITY, MemoryConfig
from nt_memory.coordination.consensus import Consensus
from nt_memory.coordination.locks import Locks, LockToken
from nt_memory.coordination.namespaces import NamespaceView
from nt_memory.coordination.pubsub import PatternSubscription, PubSub, Subscription
from nt_memory.coordination.search import SearchService
from nt_memory.durations import duration_ns, expiry_ns
from nt_memory.errors import (
    ClusterError,
    ConfigError,
    InvalidEmbedding,
    SegmentClosed,
    SegmentError,
    SegmentExists,
    SegmentNotFound,
    SystemAbandoned,
    TierError,
    ValueTooLarge,
)
from nt_memory.kernels import status as S
from nt_memory.kernels.layout.journal import JOURNAL_PAYLOAD_FIXED
from nt_memory.kernels.layout.ring import RECORD_HDR_BYTES
from nt_memory.kernels.layout.table import J_HELD, J_JOURNAL, J_NO_L1, J_PROMOTE
from nt_memory.shm.forks import forked_error, guard
from nt_memory.shm.parts import Part
from nt_memory.shm.system import System, remove_system
from nt_memory.tiers.codec import decode, encode
from nt_memory.tiers.journal import Journal
from nt_memory.tiers.l1 import HotCache, batch_items, checked_pairs, ttl_to_ns
from nt_memory.tiers.l2 import (
    DEFAULT_M,
    EF_CONSTRUCTION,
    Hit,
    IndexParams,
    VectorTier,
    validate_embedding,
    validate_embeddings,
)
from nt_memory.tiers.l3 import ColdStore, pack_kv, unpack_kv
from nt_memory.values import Duration, Key, Value

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from nt_memory.reasoningbank.bank import ReasoningBank
    from nt_memory.reasoningbank.trajectory import Trajectory
    from nt_memory.reasoningbank.verdict import VerdictResult

WRITE_TIMEOUT_S = 10.0


# Settings that shape the shared segments: the creator's stand. An attacher that asks for another
# value than the default and than the system has gets a ConfigError instead of silently another.
_SHAPE = {
    "embedding_dim": lambda c: c.embedding_dim,
    "vector_space": lambda c: c.vector_space,
    "index_m": lambda c: c.index_m,
    "index_ef_construction": lambda c: c.index_ef_construction,
    "journal_bytes": lambda c: c.journal_bytes,
    "max_memory_bytes": lambda c: c.max_memory_bytes,
    "max_entries": lambda c: c.cache_config.max_entries,
    "max_key_bytes": lambda c: c.cache_config.max_key_bytes,
    "max_value_bytes": lambda c: c.cache_config.max_value_bytes,
    "l1_ttl_s": lambda c: c.cache_config.ttl,
}
_DEFAULT_CONFIG = MemoryConfig()


def _check_settings(config: MemoryConfig, stored: dict) -> None:
    for key, read in _SHAPE.items():
        want = read(config)
        if want != read(_DEFAULT_CONFIG) and key in stored and stored[key] != want:
            raise ConfigError(
                f"{key}={want!r} cannot be honoured: system {config.name!r} was created with {key}={stored[key]!r} "
                "(the creator's shape settings stand; open with the same value, or the default, to attach)"
            )


def _sync(durability, default: str) -> bool:
    if durability is None:
        return default == "sync"
    if durability not in DURABILITY:
        raise ConfigError(f"durability={durability!r} must be one of {DURABILITY}")
    return durability == "sync"


def _system_config(config: MemoryConfig) -> dict:
    """What a memory system records beside its parts' own settings (PartSpec.settings)."""
    return {
        "kind": "memory-system",
        "storage_path": config.path,
        "durability": config.durability,
        "enable_compression": config.enable_compression,
        "embedding_dim": config.embedding_dim,
        "vector_space": config.vector_space,
        "index_m": config.index_m,
        "index_ef_construction": config.index_ef_construction,
        "max_memory_bytes": config.max_memory_bytes,
        "journal_bytes": config.journal_bytes,
        "l1_ttl_s": config.cache_config.ttl,
    }


# The parts of a memory system, in the order they are made (shm/parts.py: the Part protocol). The
# first ones need only the config; the last ones read durable high-water marks from L3.
SHM_PARTS: tuple[type[Part], ...] = (HotCache, Journal, VectorTier, PubSub)
L3_PARTS: tuple[type[Part], ...] = (Locks, Consensus)
PARTS = SHM_PARTS + L3_PARTS


def attach_parts(system: System) -> dict[str, Part]:
    """A view of each part ``system`` holds (observers too), by its first segment's name."""
    out: dict[str, Part] = {}
    try:
        for cls in PARTS:
            if all(p in system.parts for p in cls.PARTS):
                out[cls.PARTS[0]] = cls.attach(system)
    except BaseException:
        for part in out.values():
            part.close()
        raise
    return out


@contextlib.contextmanager
def observe(name: str, timeout: float = 0.5) -> Iterator[tuple[System, dict[str, Part]]]:
    """``with observe(name) as (system, parts):`` system ``name`` attached as an observer (no
    member slot, no L3) and every part's view over it: what ``nt-memory inspect``, ``verify`` and
    ``top`` read."""
    system = System.attach(name, timeout=timeout, register=False)
    try:
        parts = attach_parts(system)
        try:
            yield system, parts
        finally:
            for part in parts.values():
                part.close()
    finally:
        system.close()


class MemorySystem:
    """A memory system shared by every process that opens it by name. Thread- and process-safe.

    Raises ``ConfigError`` for bad settings (or a storage path that differs from the one the system
    was created with), ``CapacityError`` if ``/dev/shm`` cannot hold it, ``TierError`` if LMDB fails.
    """

    # Class-level defaults: a half-built or forked MemorySystem can always close() and repr().
    name = "?"
    closed = False
    _forked_from = 0

    def __init__(self, config: MemoryConfig, system: System):
        self.config = config
        self.name = config.name
        self.system = system
        stored = system.config
        if stored.get("kind") != "memory-system":
            raise SegmentError(f"system {config.name!r} is not a memory system (made by HotCache.create?)")
        if stored["storage_path"] != config.path:
            raise ConfigError(
                f"storage_path={config.path!r} differs from {stored['storage_path']!r}, the path system "
                f"{config.name!r} was created with"
            )
        _check_settings(config, stored)
        # Per open: what this process asked for is what its puts get (the creator's choice is only
        # the creator's).
        self.durability = config.durability
        self.compression = config.enable_compression
        self.max_memory_bytes = stored["max_memory_bytes"]
        ttl = stored["l1_ttl_s"]
        self._l1_ttl_ns = ttl_to_ns(ttl) if ttl else 0
        self.store = ColdStore.shared(config.path, map_bytes=config.l3_map_bytes, compression=self.compression)
        try:
            self.l1 = HotCache(system, owns_system=False)
            self.journal = Journal(system, self.store, self.compression, self.l1.recover)
            self.l2 = VectorTier(
                system,
                config.path,
                space=stored["vector_space"],
                mode=config.mode,
                recover=self.l1.recover,
                index=IndexParams(
                    m=stored.get("index_m", DEFAULT_M),  # systems made before these were settings
                    ef_construction=stored.get("index_ef_construction", EF_CONSTRUCTION),
                    ef=config.index_ef,
                ),
            )
            self.l2.window = config.embedding_window
            self.l2.durable = self.journal.flush
            self.l2.vector_source = lambda kb: self.store.get("embeddings", kb)
            self.pubsub = PubSub(system)
            self.search = SearchService(self.l2, self.pubsub, config.index_sharing)
            self.locks = Locks(system, self.store)
            self.consensus = Consensus(system, self.store)
        except BaseException:
            self._close_parts()
            raise
        self.embedding_dim = self.l2.dim
        self._bank: ReasoningBank | None = None
        self._beat_at = 0
        self._expired_reads = 0
        self._l1_max_value = self.l1.max_value_bytes  # encoded (tag included)
        self._journal_max = self.journal.capacity // 2 - RECORD_HDR_BYTES - JOURNAL_PAYLOAD_FIXED
        self._bind_get()
        # Per instance, over the methods: the lock verbs are one C call each.
        self.acquire_lock = self.locks.fast_acquire  # type: ignore[method-assign]
        self.release_lock = self.locks.fast_release  # type: ignore[method-assign]
        self.l1.recover()  # what members that died left half-done, before this process reads
        self.journal.start()
        guard(self)
        self.cluster: Any = None
        if config.cluster is not None:
            try:
                self._join_cluster(config)
            except BaseException:
                self.close()
                raise
        if system.root.creator_pid == os.getpid() and self.l2.count == 0 and self.store.count("embeddings") > 0:
            # We created the system over existing data (after a reboot): refill the embedding log.
            # Only the creator does, so processes opening at once do not each append a copy.
            self.reindex()

    # -------------------------------------------------------------------------------- opening
    @classmethod
    def open(
        cls, config: MemoryConfig | None = None, *, timeout: float = 10.0, label: str = "", **overrides: Any
    ) -> MemorySystem:
        """Create the system ``config.name`` or attach to it if it exists (two processes opening
        at once both succeed and share one system). Leftover journal records of dead processes are
        drained into LMDB by the flusher as soon as it starts."""
        if config is None:
            config = MemoryConfig(**overrides)
        elif overrides:
            import dataclasses

            config = dataclasses.replace(config, **overrides)
        deadline = time.monotonic() + timeout
        while True:
            try:
                system = System.attach(
                    config.name, timeout=max(0.1, deadline - time.monotonic()), label=label, allow_gid=config.gid
                )
            except SegmentNotFound:
                try:
                    system = cls._create(config, label)
                except SegmentExists:
                    if time.monotonic() > deadline:
                        raise
                    continue  # another process won the race: attach to its system
            except SystemAbandoned:
                if time.monotonic() > deadline:
                    raise
                remove_system(config.name)  # its creator died half-way: nothing to keep
                continue
            try:
                return cls(config, system)
            except BaseException:
                system.close()
                raise

    @classmethod
    def _create(cls, config: MemoryConfig, label: str) -> System:
        specs = [spec for part in SHM_PARTS for spec in part.part_specs(config, None)]
        shm_total = sum(s.size for s in specs)
        if shm_total > config.max_memory_bytes:
            raise ConfigError(
                f"the shared-memory footprint would be {shm_total:,} bytes (L1 table, arena, journal), over "
                f"max_memory_bytes={config.max_memory_bytes:,}: lower max_entries, arena_bytes or journal_bytes"
            )
        store = ColdStore.shared(config.path, map_bytes=config.l3_map_bytes)  # fails early on a bad path
        try:
            # High-water marks come from L3 and are reserved ahead before anyone can attach: fences
            # and proposal ids continue above everything issued before a reboot.
            specs += [spec for part in L3_PARTS for spec in part.part_specs(config, store)]
            return System.create(
                config.name,
                specs,
                _system_config(config),
                mode=config.mode,
                max_members=config.max_members,
                label=label,
                gid=config.gid,
            )
        finally:
            store.close()

    # ---------------------------------------------------------------------------------- cluster
    def _join_cluster(self, config: MemoryConfig) -> None:
        """Connect to the cluster (raises ``ClusterError`` if unreachable within its timeout, or if
        the bucket is another application's) and stand for the bridge role (nt_memory/cluster)."""
        from nt_memory.cluster.bridge import Bridge
        from nt_memory.cluster.client import ClusterClient, encode_key
        from nt_memory.cluster.consensus import ClusterConsensus
        from nt_memory.cluster.locks import ClusterLocks, holder_name

        cfg = config.cluster
        assert cfg is not None
        client = ClusterClient(cfg, self.name)
        self.cluster = client
        self.cluster_locks = ClusterLocks(client, holder_name(cfg.host, self.name), cfg.lock_lease)
        self.locks.scoped["cluster"] = self.cluster_locks
        self.cluster_consensus = ClusterConsensus(client)
        self.consensus.scoped["cluster"] = self.cluster_consensus
        host = f"{cfg.host or os.uname().nodename}/{self.name}"
        self.bridge = Bridge(
            client,
            self.store,
            self.locks,
            self._pending_state,
            self._apply_remote,
            self.journal.drain_count,
            self.pubsub,
            encode_key("", host.encode()),
        )

    def _pending_state(self, kb: bytes) -> Any:
        """The newest state of ``kb`` in the journal (not yet in LMDB), ``...`` if none."""
        pending = self.journal.find(kb)
        if pending is None:
            return ...
        return None if pending[0] == "delete" else (pending[1], pending[2])

    def _apply_remote(self, kb: bytes, state: tuple[bytes | memoryview, int] | None) -> None:
        """Write a state another host wrote (from the cluster's bucket) here: an ordinary journaled
        put or delete of stored key ``kb``, so every local tier has it in order."""
        h = self.l1.hash_bytes(kb)
        now = time.time_ns()
        if state is None or (state[1] and state[1] <= now):
            self._delete_stored(kb, h)
            return
        vb, expiry = bytes(state[0]), state[1]
        self._store(kb, h, vb, self._l1_expiry(now, expiry), expiry, None, True)

    def get_consistent(self, namespace: str, key: Key, default: Any = None, timeout: float = 10.0) -> Any:
        """The value of ``(namespace, key)`` at the cluster bucket's latest revision (``get`` is
        local, hence eventually consistent): this host's own pending writes of the key go out
        first, then the bucket is read. Needs ``MemoryConfig(cluster=...)``; ``ClusterError`` if the
        cluster does not answer within ``timeout`` seconds."""
        self._check_open()
        bridge = self._bridge()
        kb = self.l1.key_bytes(namespace, key)
        if not bridge.wait_published(kb, timeout):
            raise ClusterError(
                f"get_consistent: this host's write of {namespace!r}/{key!r} did not reach the cluster within "
                f"{timeout:g}s (bridge: {bridge.stats()['last_error'] or 'no process holds the role'})"
            )
        _rev, state = self.cluster.call(self.cluster.read_value(kb), timeout)
        if state is None or (state[1] and state[1] <= time.time_ns()):
            return default
        return decode(state[0])

    def _bridge(self) -> Any:
        if self.cluster is None:
            raise ConfigError(f"system {self.name!r} was opened without MemoryConfig(cluster=ClusterConfig(...))")
        return self.bridge

    # ------------------------------------------------------------------------------------ reads
    def get(self, namespace: str, key: Key, default: Any = None) -> Any:
        """The value of ``(namespace, key)``: L1, else the unflushed journal, else L3 (promoting
        the value into L1). ``default`` if absent or expired."""
        return self._get(namespace, key, default)

    def _bind_get(self) -> None:
        self.get = self._get = self.l1.make_getter(self.read_lower)  # type: ignore[method-assign]
        if self.durability == "write-behind":
            # A journaled bytes put in one C call; sync puts, embeddings, other values and
            # anything the kernel does not finish take the Python path.
            limit = min(self._l1_max_value, self._journal_max)
            self.put = self.l1.make_putter(  # type: ignore[method-assign]
                self._l1_ttl_ns, J_JOURNAL, limit, MemorySystem.put.__get__(self)
            )

    def read_lower(self, r: int, h: int, kb: bytes, default: Any) -> Any:
        """The answer for stored key ``kb`` (hash ``h``) when L1's lookup returned ``r`` instead of a
        value: L1 once more if ``r`` was not a miss, else the unflushed journal, else L3 (promoting
        the value into L1). The tier interface ``get`` and the asyncio facade are built on."""
        if r not in (S.NOT_FOUND, S.EXPIRED):
            found = self.l1.read_encoded(kb, h, r)
            if not isinstance(found, int):
                return decode(found)
            r = found
        if r == S.EXPIRED:
            self.l1.reclaim_expired(kb, h)  # counted as an expiration, gone from len() and stats
        version = self.l1.stripe_version(h)
        now = time.time_ns()
        entry = self._stored(kb, now)
        if entry is None:
            return default
        vb, expiry = entry
        if len(vb) <= self._l1_max_value:
            vb = bytes(vb)
            self.l1.put_encoded(kb, h, vb, self._l1_expiry(now, expiry), expiry, J_PROMOTE, version)
            return decode(vb)
        return decode(vb, copy=False)  # large: a read-only view of the bytes LMDB returned

    def _stored(self, kb: bytes, now: int):
        """(encoded value, data expiry) of stored key ``kb`` in the tiers below L1 (the unflushed
        journal, else L3), or None when absent or expired there. Under the key's stripe this is the
        key's current value: every write of a memory system is journaled inside that stripe."""
        pending = self.journal.find(kb)
        if pending is not None:
            if pending[0] == "delete":
                return None
            _, vb, expiry = pending
        else:
            raw = self.store.get("kv", kb)
            if raw is None:
                return None
            vb, expiry = unpack_kv(raw)
        if expiry and expiry <= now:
            self._expired_reads += 1
            return None
        return vb, expiry

    # ----------------------------------------------------------------------------------- writes
    def _l1_expiry(self, now: int, data_expiry: int) -> int:
        exp = now + self._l1_ttl_ns if self._l1_ttl_ns else 0
        if data_expiry and (exp == 0 or data_expiry < exp):
            exp = data_expiry
        return exp

    def put(
        self,
        namespace: str,
        key: Key,
        value: Value,
        ttl: Duration | None = None,
        embedding: ArrayLike | None = None,
        durability: str | None = None,
    ) -> None:
        """Store ``value`` (bytes, numpy array or JSON-able). ``ttl`` (seconds or timedelta) bounds
        the data's life in every tier; ``embedding`` (``embedding_dim`` floats) makes the entry
        findable by :meth:`search_similar`. Returns once the write is as durable as ``durability``
        says (this call's, else this handle's: ``"write-behind"`` or ``"sync"``).

        Raises ``InvalidKey``, ``CodecError``, ``InvalidEmbedding``, ``ValueTooLarge`` (key over
        ``max_key_bytes``, value over ``max_memory_bytes``), ``CapacityError``, ``TierError``; in
        every case nothing at all is stored. Thread-safe.
        """
        self._put(namespace, key, value, ttl, embedding, True, durability)

    def put_nowait(
        self,
        namespace: str,
        key: Key,
        value: Value,
        ttl: Duration | None = None,
        embedding: ArrayLike | None = None,
    ) -> bool:
        """``put`` if it can complete without waiting (a plain journaled write-behind write with
        room in the journal); otherwise stores nothing and returns False. For event loops."""
        return self._put(namespace, key, value, ttl, embedding, False, None)

    def put_many(
        self,
        namespace: str,
        items: Mapping[str, Value] | Mapping[bytes, Value] | Iterable[tuple[Key, Value]],
        ttl: Duration | None = None,
        embeddings: ArrayLike | None = None,
        durability: str | None = None,
    ) -> int:
        """Store many ``(key, value)`` pairs of one namespace (a dict, or an iterable of pairs) in
        order, as :meth:`put` each would, with ``embeddings`` an ``(n, embedding_dim)`` array
        aligned with them (or None). Every key, value and embedding is checked and encoded before
        the first is stored, so bad input raises with nothing stored; a ``"sync"`` batch waits for
        LMDB once, at the end. For bulk loading. Returns how many were stored."""
        sync = _sync(durability, self.durability)
        pairs = batch_items(items)
        stored = 0
        if embeddings is None:
            # Bytes values, write-behind (self.put is then a compiled putter): one call that checks
            # every pair before it stores any; the rest (all of them if it took none) go below.
            self._check_open()
            stored = self.l1.put_batch(self.put, namespace, pairs, duration_ns(ttl, "ttl"))
        if stored < len(pairs) or embeddings is not None:  # (an empty batch's embeddings are checked too)
            stored += self._put_prepared(namespace, checked_pairs(pairs[stored:]), ttl, embeddings)
        if sync and stored:
            self.journal.wait_durable(self.journal.tail, WRITE_TIMEOUT_S * 3, "a durability='sync' put_many")
        return stored

    def _put_prepared(self, namespace: str, pairs: list[tuple], ttl, embeddings) -> int:
        """``put_many``'s pairs that its compiled batch did not store, each checked and encoded
        before the first is stored."""
        vecs = None
        if embeddings is not None:
            vecs = validate_embeddings(embeddings, self.embedding_dim)
            if len(vecs) != len(pairs):
                raise InvalidEmbedding(f"embeddings has {len(vecs)} rows for {len(pairs)} items")
        now = time.time_ns()
        ready = [self._prepare(namespace, key, value, ttl, now) for key, value in pairs]
        self._beat(now)
        for i, prepared in enumerate(ready):
            self._store(*prepared, vecs[i] if vecs is not None else None, True)
        return len(ready)

    def _put(self, namespace, key, value, ttl, embedding, may_block: bool, durability) -> bool:
        self._check_open()
        sync = _sync(durability, self.durability)
        vec = validate_embedding(embedding, self.embedding_dim) if embedding is not None else None
        now = time.time_ns()
        prepared = self._prepare(namespace, key, value, ttl, now)
        self._beat(now)
        if not self._store(*prepared, vec, may_block, sync):
            return False
        if sync:
            self.journal.wait_durable(self.journal.tail, WRITE_TIMEOUT_S * 3, "a durability='sync' put")
        return True

    def _prepare(self, namespace, key, value, ttl, now: int) -> tuple[bytes, int, bytes, int, int]:
        """(key bytes, hash, encoded value, L1 expiry, data expiry) of a put, or its error."""
        kb = self.l1.key_bytes(namespace, key)
        vb = encode(value)
        data_expiry = expiry_ns(now, ttl)
        if len(vb) > self.max_memory_bytes:
            raise ValueTooLarge(
                f"value is {len(vb) - 1:,} bytes encoded; the limit is max_memory_bytes={self.max_memory_bytes:,}"
            )
        if len(kb) > self.l1.max_key_bytes:
            self.l1.raise_for(S.KEY_TOO_LARGE, kb, vb)
        return kb, self.l1.hash_bytes(kb), vb, self._l1_expiry(now, data_expiry), data_expiry

    def _beat(self, now: int) -> None:
        if now - self._beat_at > 1_000_000_000:
            self._beat_at = now
            self.system.heartbeat(now)

    def _store(self, kb, h, vb, l1_expiry, data_expiry, vec, may_block: bool, sync: bool = False) -> bool:
        """Write one prepared put into L1, the journal and the embedding log (or straight to LMDB
        when the value is too large for the journal). False: it would have waited, and
        ``may_block`` is False; nothing was stored."""
        if not may_block and (sync or vec is not None or len(vb) > self._journal_max):
            return False
        if len(vb) > self._journal_max:
            self._write_through(kb, h, vb, l1_expiry, data_expiry, vec)
            return True
        flags = J_JOURNAL if len(vb) <= self._l1_max_value else J_JOURNAL | J_NO_L1
        if vec is None:
            st = self.l1.put_encoded(kb, h, vb, l1_expiry, data_expiry, flags)
            if st == S.JOURNAL_FULL:
                if not may_block:
                    return False  # nothing was stored
                deadline = time.monotonic() + WRITE_TIMEOUT_S
                while st == S.JOURNAL_FULL:
                    self.journal.make_room(deadline)
                    st = self.l1.put_encoded(kb, h, vb, l1_expiry, data_expiry, flags)
        else:
            self._put_with_embedding(kb, h, vb, l1_expiry, data_expiry, flags, vec)
        return True

    def _put_with_embedding(self, kb, h, vb, l1_expiry, data_expiry, flags, vec) -> None:
        """Hold the key's stripe across the journal append and the log append, so the log and the
        journal order this key's writes alike; room in the log is reserved first, so a full
        ``/dev/shm`` raises before anything is stored."""
        emb = vec.tobytes()
        if self.l2.put_with(self.l1.kernel_context, h, kb, vb, l1_expiry, data_expiry, flags, emb) == S.OK:
            return  # the common case, in one kernel call
        deadline = None
        while True:
            self.l1.lock_stripe(h)
            try:
                with self.l2.reserve(len(kb)) as write_vector:
                    st = self.l1.put_encoded(kb, h, vb, l1_expiry, data_expiry, flags | J_HELD, 0, emb)
                    if st == S.OK:
                        write_vector(kb, vec, emb)
                        return
            finally:
                self.l1.unlock_stripe(h)
            deadline = deadline or time.monotonic() + WRITE_TIMEOUT_S
            self.journal.make_room(deadline)

    def _write_through(
        self, kb: bytes, h: int, vb: bytes | None, l1_expiry: int, data_expiry: int, vec: np.ndarray | None = None
    ) -> None:
        """Write a value too large for the journal straight to LMDB, ordered with the journal: hold
        the key's stripe, drop L1's copy, flush what the journal holds (older writes land first),
        write, fill L1 and the embedding log, release. L1 is emptied *before* LMDB changes, so a
        kill at any point leaves no tier serving a value LMDB does not hold."""
        self.l1.lock_stripe(h)
        try:
            self.l1.delete_encoded(kb, h, J_HELD)
            self.journal.flush()
            ops: list[tuple[str, bytes, bytes | None]]
            if vb is None:
                ops = [("kv", kb, None), ("embeddings", kb, None)]
            else:
                ops = [("kv", kb, pack_kv(vb, data_expiry, self.compression))]
                if vec is not None:
                    ops.append(("embeddings", kb, vec.tobytes()))
            if vec is not None or (vb is None and self.l2.count):
                with self.l2.reserve(len(kb)) as write_vector:
                    self.store.write(ops)
                    write_vector(kb, vec)
            else:
                self.store.write(ops)
            if vb is not None and len(vb) <= self._l1_max_value:
                self.l1.put_encoded(kb, h, vb, l1_expiry, data_expiry, J_HELD)
        finally:
            self.l1.unlock_stripe(h)

    def delete(self, namespace: str, key: Key, durability: str | None = None) -> None:
        """Remove ``(namespace, key)`` from every tier (its embedding included), as durably as
        ``durability`` (this call's, else this handle's) says. Thread-safe."""
        self._check_open()
        sync = _sync(durability, self.durability)
        kb = self.l1.key_bytes(namespace, key)
        self._delete_stored(kb, self.l1.hash_bytes(kb))
        if sync:
            self.journal.wait_durable(self.journal.tail, WRITE_TIMEOUT_S * 3, "a durability='sync' delete")

    def _delete_stored(self, kb: bytes, h: int) -> None:
        """Journal the delete of stored key ``kb`` (and of its embedding, if there are any)."""
        deadline = time.monotonic() + WRITE_TIMEOUT_S
        if not self.l2.count:
            while self.l1.delete_encoded(kb, h, J_JOURNAL) == S.JOURNAL_FULL:
                self.journal.make_room(deadline)
        else:
            self._delete_with_embedding(kb, h, deadline)

    def _delete_with_embedding(self, kb: bytes, h: int, deadline: float) -> None:
        while True:
            self.l1.lock_stripe(h)
            try:
                with self.l2.reserve(len(kb)) as write_vector:
                    if self.l1.delete_encoded(kb, h, J_JOURNAL | J_HELD) != S.JOURNAL_FULL:
                        write_vector(kb, None)
                        return
            finally:
                self.l1.unlock_stripe(h)
            self.journal.make_room(deadline)

    def keys(self, namespace: str) -> list[str]:
        """The live keys of ``namespace`` (flushes the journal, then reads L3), in key order."""
        return list(self.scan(namespace))

    def scan(self, namespace: str, prefix: str = "") -> Iterator[str]:
        """The live keys of ``namespace`` that start with ``prefix``, in key order, without loading
        their values. Flushes the journal first (every write made before the call is seen); reads
        LMDB a batch at a time, so keys written during a long scan may or may not appear."""
        self._check_open()
        if not isinstance(prefix, str):
            raise ConfigError(f"prefix must be a str, got {type(prefix).__name__}")
        ns = self.l1.prefix(namespace)
        self.journal.flush()
        for kb in self.store.live_keys(ns + prefix.encode()):
            yield kb[len(ns) :].decode("utf-8", "replace")

    def count(self, namespace: str | None = None) -> int:
        """How many live entries ``namespace`` holds (every namespace's with None). Expired entries
        never count. Flushes the journal, then counts L3's keys without loading values."""
        self._check_open()
        prefix = b"" if namespace is None else self.l1.prefix(namespace)
        self.journal.flush()
        return sum(1 for _ in self.store.live_keys(prefix))

    def __len__(self) -> int:
        """Live entries in every namespace (:meth:`count`)."""
        return self.count()

    # ------------------------------------------------------------------ atomic read-modify-write
    def ttl(self, namespace: str, key: Key) -> float | None:
        """Seconds until ``(namespace, key)`` expires: ``math.inf`` if it never does, None if it is
        absent (or already expired)."""
        self._check_open()
        kb = self.l1.key_bytes(namespace, key)
        now = time.time_ns()
        entry = self._stored(kb, now)
        if entry is None:
            return None
        return math.inf if entry[1] == 0 else (entry[1] - now) / 1e9

    def expire(self, namespace: str, key: Key, ttl: Duration | None) -> bool:
        """Give the live entry ``(namespace, key)`` a new time to live from now (seconds or a
        timedelta; None: never expires), keeping its value. False if it is absent. Atomic."""
        expiry_ns(0, ttl)  # bad input raises before anything is read

        def change(cur, now):
            if cur is None:
                return None, False
            return (bytes(cur[0]), expiry_ns(now, ttl)), True

        return self._update(namespace, key, change)

    def incr(self, namespace: str, key: Key, amount: int = 1) -> int:
        """Add ``amount`` to the integer stored under ``(namespace, key)`` (a missing key counts from
        0) and return the result: atomic across every process and thread of the system, keeping
        the entry's expiry. Raises ``TypeError`` if the stored value is not an integer."""
        if isinstance(amount, bool) or not isinstance(amount, int | np.integer):
            raise TypeError(f"amount must be an int, got {type(amount).__name__} {amount!r}")
        amount = int(amount)

        def change(cur, now):
            if cur is None:
                value, expiry = 0, 0
            else:
                value, expiry = decode(cur[0]), cur[1]
                if isinstance(value, bool) or not isinstance(value, int):
                    raise TypeError(
                        f"incr of {namespace!r}/{key!r}: the stored value is {type(value).__name__}, not an integer"
                    )
            value += amount
            return (encode(value), expiry), value

        return self._update(namespace, key, change)

    def compare_and_set(
        self, namespace: str, key: Key, expected: Value | None, new: Value, ttl: Duration | None = None
    ) -> bool:
        """Store ``new`` under ``(namespace, key)`` only if the current value equals ``expected``
        (``expected=None``: only if the key is absent). Atomic across every process and thread of
        the system. Returns whether ``new`` was stored. ``ttl`` as for :meth:`put`."""
        vb = encode(new)
        if len(vb) > self._journal_max:
            raise ValueTooLarge(
                f"new is {len(vb) - 1:,} bytes encoded; compare_and_set takes at most {self._journal_max - 1:,} "
                "(the journal's record limit)"
            )
        want = None if expected is None else encode(expected)

        def change(cur, now):
            if want is None:
                matches = cur is None
            else:
                matches = cur is not None and _same_value(bytes(cur[0]), want)
            if not matches:
                return None, False
            return (vb, expiry_ns(now, ttl)), True

        return self._update(namespace, key, change)

    def _update(self, namespace, key, change):
        """Run ``change(current, now)`` on the current ``(encoded value, data expiry)`` of a key (None
        when absent) with the key's L1 stripe held, which every writer of the key takes: no other
        write of the key, in any process, lands between the read and the write. ``change`` returns
        ``((encoded value, data expiry) or None for no write, result)``. Returns the result."""
        self._check_open()
        kb = self.l1.key_bytes(namespace, key)
        h = self.l1.hash_bytes(kb)
        deadline = None
        wait = None
        while True:
            self.l1.lock_stripe(h)
            try:
                now = time.time_ns()
                write, result = change(self._stored(kb, now), now)
                if write is None:
                    return result
                vb, data_expiry = write
                flags = J_JOURNAL | J_HELD | (0 if len(vb) <= self._l1_max_value else J_NO_L1)
                st = self.l1.try_put_encoded(kb, h, vb, self._l1_expiry(now, data_expiry), data_expiry, flags)
                if st not in (S.OK, S.JOURNAL_FULL, S.NEEDS_REHASH, S.BUSY):
                    self.l1.raise_for(st, kb, vb)
            finally:
                self.l1.unlock_stripe(h)
            if st == S.OK:
                break
            # Nothing was stored: wait with the stripe released (a rehash and the flusher may
            # need it), then read again, since another writer may have gone first.
            if st == S.JOURNAL_FULL:
                deadline = deadline or time.monotonic() + WRITE_TIMEOUT_S
                self.journal.make_room(deadline)
            else:
                wait = self.l1.wait_writable(st, wait)
        self._beat(now)
        if self.durability == "sync":
            self.journal.wait_durable(self.journal.tail, WRITE_TIMEOUT_S * 3, "a durability='sync' update")
        return result

    def get_many(self, namespace: str, keys: Iterable[Key], default: Any = None) -> list[Any]:
        """The values of ``keys`` in ``namespace``, in order (``default`` for each absent one), as
        :meth:`get` each would answer."""
        if isinstance(keys, str | bytes):
            raise ConfigError("keys must be a list of keys, not a single str or bytes")
        return self.l1.get_batch(self._get, namespace, keys, default)

    # ------------------------------------------------------------------------- reasoningbank
    @property
    def bank(self) -> ReasoningBank:
        """The ReasoningBank over this system (see :mod:`nt_memory.reasoningbank.bank`)."""
        if self._bank is None:
            from nt_memory.reasoningbank.bank import ReasoningBank

            self._bank = ReasoningBank(self)
        return self._bank

    def track_trajectory(self, trajectory: Trajectory) -> VerdictResult | None:
        """Store a trajectory in the ReasoningBank; a complete one is judged (returns its verdict)."""
        self._check_open()
        return self.bank.track(trajectory)

    # --------------------------------------------------------------------------- coordination
    def publish(self, topic: str, message: Value) -> int:
        """Broadcast ``message`` (bytes or JSON-able) to ``topic``'s subscribers in every process."""
        return self.pubsub.publish(topic, message)

    def subscribe(self, topic: str) -> Subscription:
        """Receive what is published to ``topic`` from now on: ``sub.recv(timeout)``."""
        return self.pubsub.subscribe(topic)

    def psubscribe(self, pattern: str) -> PatternSubscription:
        """Receive what is published to every topic matching the glob ``pattern`` (``swarm/*/updates``),
        topics made later included: ``sub.recv(timeout)`` returns ``(topic, message)``."""
        return self.pubsub.psubscribe(pattern)

    def acquire_lock(
        self, name: str, timeout: Duration | None = None, lease: Duration | None = None, scope: str = "local"
    ) -> LockToken:
        """Take the named lock (see :class:`nt_memory.coordination.locks.Locks`); ``scope="cluster"``
        takes it on every host of the cluster (nt_memory/cluster/locks.py)."""
        return self.locks.acquire(name, timeout, lease, scope)

    def release_lock(self, token: LockToken) -> None:
        self.locks.release(token)

    def extend_lock(self, token: LockToken, lease: Duration | None) -> LockToken:
        """Give a held lock a new lease from now (seconds or a timedelta; None: no lease). Raises
        :class:`StaleToken` if the lock was lost meanwhile (its lease ran out, or it was taken over)."""
        return self.locks.extend(token, lease)

    def lock(
        self, name: str, timeout: Duration | None = None, lease: Duration | None = None, scope: str = "local"
    ) -> contextlib.AbstractContextManager[LockToken]:
        """``with mem.lock("res", timeout=1.0) as token:`` ... (``scope="cluster"``: on every host)."""
        return self.locks.lock(name, timeout, lease, scope)

    def namespace(self, agent_id: str) -> NamespaceView:
        """A view of this system restricted to ``swarm/<agent_id>``."""
        return NamespaceView(self, agent_id)

    # -------------------------------------------------------------------------------- vectors
    def search_similar(
        self,
        namespace: str | None,
        query: ArrayLike,
        top_k: int = 10,
        ef: int | None = None,
        with_values: bool = False,
        filter: Callable[[str, str], bool] | None = None,  # noqa: A002 - the name hnswlib and every vector store use
        key_prefix: str | None = None,
    ) -> list[Hit]:
        """The ``top_k`` entries whose embeddings are nearest ``query``, nearest first, as
        :class:`Hit` (``namespace``, ``key``, ``distance``, ``value`` if ``with_values``). Only
        ``namespace``'s entries, or every namespace's with ``namespace=None``; only keys starting
        with ``key_prefix``; only entries ``filter(namespace, key)`` is true for. The restrictions
        apply inside the search (hnswlib's filter), so ``top_k`` hits come back whenever that many
        match and are reachable. ``ef`` is the search breadth (default ``index_ef``, 320); hnswlib
        needs at least ``top_k`` and raises a smaller one to it. Hits whose value has expired are
        dropped when ``with_values``."""
        return self._search(namespace, query, top_k, ef, with_values, filter, key_prefix, single=True)[0]

    def search_similar_many(
        self,
        namespace: str | None,
        queries: ArrayLike,
        top_k: int = 10,
        ef: int | None = None,
        with_values: bool = False,
        filter: Callable[[str, str], bool] | None = None,  # noqa: A002
        key_prefix: str | None = None,
    ) -> list[list[Hit]]:
        """:meth:`search_similar` for each row of ``queries`` (an ``(n, embedding_dim)`` array), in
        one call: a list of hit lists. Without ``filter``/``key_prefix`` hnswlib answers the rows
        on every core at once."""
        return self._search(namespace, queries, top_k, ef, with_values, filter, key_prefix, single=False)

    def _search(self, namespace, queries, top_k, ef, with_values, flt, key_prefix, single):
        self._check_open()
        ns = None if namespace is None else self.l1.prefix(namespace)[:-1]
        if key_prefix is not None and not isinstance(key_prefix, str):
            raise ConfigError(f"key_prefix must be a string, got {type(key_prefix).__name__}")
        prefix = key_prefix.encode() if key_prefix else b""
        if flt is None:
            found = self.search.search(ns, queries, top_k, ef, prefix, single)
        else:
            # A Python predicate cannot be sent to another process: this one searches an index
            # of its own (README: "Sharing the index").
            found = self.l2.hits(ns, queries, top_k, ef, self._allow(flt, prefix), single)
        if not with_values:
            return found
        out = []
        for hits in found:
            kept = []
            for hit in hits:
                value = self.get(hit.namespace, hit.key)
                if value is not None:  # expired or deleted since it was indexed
                    kept.append(Hit(hit.namespace, hit.key, hit.distance, value))
            out.append(kept)
        return out

    def _allow(self, flt, prefix: bytes):
        """The record-id predicate of a ``filter`` (namespace, key) -> bool and a key prefix."""
        if not callable(flt):
            raise ConfigError(f"filter must be a callable (namespace, key) -> bool, got {type(flt).__name__}")

        def accept(ns_b: bytes, key_b: bytes) -> bool:
            return flt(ns_b.decode("utf-8", "replace"), key_b.decode("utf-8", "replace"))

        return self.l2.record_filter(prefix, accept)

    def embedding(self, namespace: str, key: Key) -> np.ndarray | None:
        """The stored embedding of ``(namespace, key)`` as a read-only float32 array (a copy: from
        the embedding log, or from L3 once the log has released it), or None."""
        self._check_open()
        rid = self.l2.latest_id(self.l1.key_bytes(namespace, key))
        return None if rid < 0 else self.l2.vector(rid)

    def reindex(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Refill an empty embedding log from L3 (after a reboot) and index it. ``progress`` is
        called as ``progress(done, total)``. Returns the number of embeddings."""
        self._check_open()
        total = self.store.count("embeddings")
        done = 0
        if self.l2.count == 0:
            for kb, raw in self.store.items("embeddings"):
                if self.store.kv_get(kb) is None:
                    continue  # its value has expired or was deleted
                vec = np.frombuffer(raw, np.float32)
                if len(vec) != self.embedding_dim:
                    raise TierError(
                        f"stored embedding of {kb!r} has {len(vec)} components, expected {self.embedding_dim}"
                    )
                h = self.l1.hash_bytes(kb)
                self.l1.lock_stripe(h)
                try:
                    self.l2.append(kb, vec)
                finally:
                    self.l1.unlock_stripe(h)
                done += 1
                if progress and done % 1000 == 0:
                    progress(done, total)
        if self.search.offer() or self.search.mode == "local":
            self.l2.sync()  # else the process that serves the searches indexes the refilled log
        if progress:
            progress(total, total)
        return self.l2.count

    def exists(self, namespace: str, key: Key) -> bool:
        """Whether ``key`` holds a live (not expired) value in ``namespace``, in any tier."""
        return self.get(namespace, key, _MISSING) is not _MISSING

    def __contains__(self, item: tuple[str, Key]) -> bool:
        namespace, key = item
        return self.exists(namespace, key)

    # --------------------------------------------------------------------------------- lifetime
    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every write made before the call is committed to LMDB (on disk)."""
        self._check_open()
        self.journal.flush(timeout)

    def stats(self) -> dict:
        """Counters per tier: ``l1`` (shared), ``journal`` (shared), ``l3`` (this process's view),
        and ``topics``: each topic's counts and every live subscription's lag (shared)."""
        self._check_open()
        out = {
            "l1": self.l1.stats(),
            "journal": self.journal.stats(),
            "l2": self.l2.stats() | self.search.stats(),
            "l3": self.store.stats(),
            "topics": self.pubsub.stats(),
        }
        if self.cluster is not None:
            out["cluster"] = self.bridge.stats() | {
                "locks": self.cluster_locks.stats(),
                "consensus": self.cluster_consensus.stats(),
            }
        return out

    def verify(self) -> dict[str, list[str]]:
        """Check every part's shared words (the Part protocol's ``verify``, as diskcache's
        ``check``): by part, the problems found (every list empty when the system is sound). Reads
        only; run it on a quiet system (a write in flight may show up as a problem)."""
        self._check_open()
        parts: dict[str, Part] = {"l1": self.l1, "journal": self.journal, "embed": self.l2, "topics": self.pubsub}
        parts |= {"locks": self.locks, "consensus": self.consensus}
        return {name: part.verify() for name, part in parts.items()}

    def _check_open(self) -> None:
        if self._forked_from:
            raise forked_error(f"MemorySystem {self.name!r}", self._forked_from)
        if self.closed:
            raise SegmentClosed(f"MemorySystem {self.name!r} is closed")

    def _forked(self) -> None:
        """In a forked child: closed; the parts are marked by their own hooks (nothing shared is
        touched, no flusher runs here)."""
        self._forked_from = self.system.opened_pid
        self._unbind()
        self.closed = True

    def _unbind(self) -> None:
        """Drop the per-instance lock verbs (one C call each, over raw slot addresses): the methods,
        which check, answer from now on. The compiled get and put stay: L1's context says closed."""
        for verb in ("acquire_lock", "release_lock"):
            self.__dict__.pop(verb, None)

    def close(self) -> None:
        """Hand over the flusher role (draining first), detach, close LMDB. Safe to call twice.
        The system stays for other processes; ``unlink()`` removes its segments."""
        if self.closed:
            return
        self.closed = True
        self._unbind()
        try:
            # The bridge first (it writes through the journal), then the connection.
            for part, verb in (("bridge", "close"), ("cluster", "close")):
                obj = self.__dict__.get(part)
                if obj is not None:
                    getattr(obj, verb)()
            for part, verb in (("journal", "stop"), ("search", "stop"), ("l2", "save")):
                obj = self.__dict__.get(part)  # absent in a half-built object
                if obj is not None:
                    getattr(obj, verb)()
        finally:
            self._close_parts()

    def _close_parts(self) -> None:
        """Close every part this object got as far as opening (the next search holder loads what
        was just saved), the system, then LMDB."""
        for part in ("search", "l2", "pubsub", "l1", "system", "store"):
            obj = self.__dict__.get(part)
            if obj is not None:
                obj.close()

    def __reduce__(self) -> tuple[Any, tuple[MemoryConfig]]:
        """Pickled by name, as CPython's ``SharedMemory``: unpickling opens the system in that process."""
        return (type(self).open, (self.config,))

    def unlink(self) -> None:
        """Remove the system's shared-memory segments (before or after close). The data in
        ``storage_path`` stays: opening the name again starts from it."""
        self.system.unlink()

    def __enter__(self) -> MemorySystem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"forked from pid {self._forked_from}" if self._forked_from else "closed" if self.closed else "open"
        return f"<MemorySystem {self.name!r} pid={os.getpid()} {state}>"


_MISSING = object()


def _same_value(stored: bytes, want: bytes) -> bool:
    """Whether two encoded values hold equal values: the same bytes, or equal once decoded (JSON
    objects whose keys were written in another order; arrays of equal dtype, shape and data)."""
    if stored == want:
        return True
    a, b = decode(stored), decode(want)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and bool(np.array_equal(a, b))
        )
    return type(a) is type(b) and a == b
