"""Configuration: ``MemoryConfig`` and ``CacheConfig``, validated at construction.

The seed's fields (``max_entries``, ``ttl``, ``track_access``, ``storage_path``,
``enable_compression``, ``max_memory_bytes``) keep their names and meaning; ``name``,
``embedding_dim``, ``durability`` and the shared-memory sizes are ours.

TTL semantics: ``CacheConfig.ttl`` bounds how long an entry stays in **L1**. Past it, the value is
served from L3 and promoted again, as in the seed. A per-put ``ttl=`` bounds the **data's life**:
after it, ``get`` returns None from every tier.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import warnings
from typing import Any

from nt_memory.errors import ConfigError
from nt_memory.shm.system import validate_name

DURABILITY = ("write-behind", "sync")


def _int(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value:,} is out of range: must be between {lo:,} and {hi:,}")
    return value


def _seconds(name, value, allow_none=True):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number of seconds{' or None' if allow_none else ''}, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name}={value!r} must be a finite number of seconds greater than 0")
    return value


@dataclasses.dataclass(frozen=True)
class CacheConfig:
    """The L1 hot table. ``ttl`` (seconds, None = no bound) bounds an entry's stay in L1;
    ``max_value_bytes`` is the largest value kept in L1 (larger ones live in L3 only)."""

    max_entries: int = 100_000
    ttl: float | None = 3600.0
    track_access: bool = True
    arena_bytes: int | None = None
    max_key_bytes: int = 256
    max_value_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        _int("max_entries", self.max_entries, 1, 1 << 30)
        _seconds("ttl", self.ttl)
        if not isinstance(self.track_access, bool):
            raise ConfigError(f"track_access must be True or False, got {self.track_access!r}")
        if self.arena_bytes is not None:
            _int("arena_bytes", self.arena_bytes, 1 << 16, 64 << 30)
        _int("max_key_bytes", self.max_key_bytes, 1, 64 * 1024)
        _int("max_value_bytes", self.max_value_bytes, 1, 1 << 20)


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    """Joining hosts through NATS JetStream (the ``cluster`` extra: ``pip install 'nt-memory[cluster]'``).

    ``url``: one ``nats://host:port`` or several (a NATS cluster's seeds). ``bucket``: the
    JetStream key-value bucket every host of the swarm shares (created with ``replicas`` copies if
    missing; one already holding another application's keys is refused). ``connect_timeout``
    bounds the connection at open: an unreachable server raises ``ClusterError`` within it.
    ``user``/``password``, ``token``, ``credentials`` (a .creds file) and ``tls`` (an
    ``ssl.SSLContext``) are passed to ``nats-py`` as they are. ``lock_lease``: the lease of a
    ``scope="cluster"`` lock taken without one (a host that dies loses its locks when it ends).
    ``host``: this host's name in the bucket (default: the machine's host name and the system's name).
    ``topics``: topic prefixes (``("swarm/",)``) whose messages every host's subscribers see; a
    topic outside them stays on its host. Give every process of a system the same settings.
    """

    url: str | tuple[str, ...] = "nats://127.0.0.1:4222"
    bucket: str = "nt-memory"
    replicas: int = 1
    connect_timeout: float = 2.0
    user: str | None = None
    password: str | None = None
    token: str | None = None
    credentials: str | None = None
    tls: Any = None
    lock_lease: float = 10.0
    host: str | None = None
    topics: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        urls = (self.url,) if isinstance(self.url, str) else self.url
        if not isinstance(urls, tuple | list) or not urls:
            raise ConfigError(f"cluster url must be a nats:// URL or a tuple of them, got {self.url!r}")
        for u in urls:
            if not isinstance(u, str) or not u.startswith(("nats://", "tls://", "ws://", "wss://")):
                raise ConfigError(f"cluster url {u!r} must start with nats://, tls://, ws:// or wss://")
        if not isinstance(self.bucket, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.bucket):
            raise ConfigError(f"cluster bucket={self.bucket!r} must be 1 to 64 of A-Z a-z 0-9 _ -")
        _int("replicas", self.replicas, 1, 5)
        _seconds("connect_timeout", self.connect_timeout, allow_none=False)
        _seconds("lock_lease", self.lock_lease, allow_none=False)
        if isinstance(self.topics, str) or not isinstance(self.topics, tuple | list):
            raise ConfigError(f"cluster topics={self.topics!r} must be a tuple of topic prefixes, like ('swarm/',)")
        for prefix in self.topics:
            if not isinstance(prefix, str) or not re.fullmatch(r"[A-Za-z0-9_\-./]{1,40}", prefix):
                raise ConfigError(f"cluster topic prefix {prefix!r} must be 1 to 40 of A-Z a-z 0-9 _ - . /")
        if self.host is not None and (
            not isinstance(self.host, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.host)
        ):
            raise ConfigError(f"cluster host={self.host!r} must be 1 to 64 of A-Z a-z 0-9 _ . -")

    def bridges(self, topic: str) -> bool:
        """Is ``topic`` one every host's subscribers see?"""
        return topic.startswith(tuple(self.topics))

    @property
    def servers(self) -> list[str]:
        return [self.url] if isinstance(self.url, str) else list(self.url)


@dataclasses.dataclass(frozen=True)
class MemoryConfig:
    """A memory system: its name, where it keeps durable data, and its limits.

    ``durability``: ``"write-behind"`` (a put returns once it is in the shared-memory journal, which
    survives the death of every process; a flusher makes it durable in LMDB within milliseconds) or
    ``"sync"`` (a put returns once LMDB has committed it to disk). Each process's own setting
    holds for its puts, whatever the creator chose; ``put(..., durability=)`` overrides it.

    ``group``: share the system with a group's members (needs ``mode=0o660`` or ``0o640``); without
    it, only this user's processes can attach, and segments another user created are refused.

    The similarity index (hnswlib): ``index_m`` links per node and ``index_ef_construction`` are
    the creator's (every process builds and loads the same saved index); ``index_ef``, the default
    search breadth, is each process's own (``search_similar(ef=)`` overrides it per call).
    ``index_sharing``, each process's own: ``"shared"`` (one process of the system holds the index
    and answers the other processes' searches over shared-memory topics; see
    ``nt_memory.coordination.search``) or ``"local"`` (this process holds an index of its own, and
    never answers another's searches).
    ``embedding_window``, each process's own: how many of the newest embeddings the shared log
    keeps beyond those the saved index covers. Past it, the process that indexes saves its index
    and gives the older vectors' pages back (the saved index and L3 hold them), so the vectors are
    not held twice; 0 keeps every vector in shared memory.
    """

    name: str = "default"
    storage_path: str = "./data/memory"
    cache_config: CacheConfig = dataclasses.field(default_factory=CacheConfig)
    enable_compression: bool = True
    max_memory_bytes: int = 1 << 30
    embedding_dim: int = 128
    vector_space: str = "cosine"
    index_m: int = 16
    index_ef_construction: int = 200
    index_ef: int = 320
    index_sharing: str = "shared"
    embedding_window: int = 262_144
    durability: str = "write-behind"
    journal_bytes: int = 32 << 20
    l3_map_bytes: int = 1 << 30
    mode: int = 0o600
    max_members: int = 256
    group: int | str | None = None
    agentdb_url: str | None = None  # the seed's setting: accepted, with a warning (L2 runs in-process)
    cluster: ClusterConfig | None = None  # joins hosts through NATS JetStream; None: this host only

    def __post_init__(self) -> None:
        validate_name(self.name)
        if not isinstance(self.storage_path, str | os.PathLike) or not str(self.storage_path):
            raise ConfigError(f"storage_path must be a non-empty path, got {self.storage_path!r}")
        if not isinstance(self.cache_config, CacheConfig):
            raise ConfigError(f"cache_config must be a CacheConfig, got {type(self.cache_config).__name__}")
        if not isinstance(self.enable_compression, bool):
            raise ConfigError(f"enable_compression must be True or False, got {self.enable_compression!r}")
        _int("max_memory_bytes", self.max_memory_bytes, 16 << 20, 1 << 46)
        _int("embedding_dim", self.embedding_dim, 1, 65_536)
        if self.vector_space not in ("cosine", "l2", "ip"):
            raise ConfigError(f"vector_space={self.vector_space!r} must be 'cosine', 'l2' or 'ip'")
        _int("index_m", self.index_m, 2, 100)
        _int("index_ef_construction", self.index_ef_construction, 1, 10_000)
        _int("index_ef", self.index_ef, 1, 100_000)
        if self.index_sharing not in ("shared", "local"):
            raise ConfigError(f"index_sharing={self.index_sharing!r} must be 'shared' or 'local'")
        _int("embedding_window", self.embedding_window, 0, 1 << 40)
        if self.durability not in DURABILITY:
            raise ConfigError(f"durability={self.durability!r} must be one of {DURABILITY}")
        _int("journal_bytes", self.journal_bytes, 1 << 20, 4 << 30)
        _int("l3_map_bytes", self.l3_map_bytes, 1 << 20, 1 << 46)
        if self.mode not in (0o600, 0o660, 0o640, 0o644, 0o666):
            raise ConfigError(f"mode={self.mode!r} must be one of 0o600, 0o640, 0o644, 0o660, 0o666")
        _int("max_members", self.max_members, 2, 4096)
        if self.cluster is not None and not isinstance(self.cluster, ClusterConfig):
            raise ConfigError(f"cluster must be a ClusterConfig or None, got {type(self.cluster).__name__}")
        if self.agentdb_url is not None:
            if not isinstance(self.agentdb_url, str):
                raise ConfigError(f"agentdb_url must be a str or None, got {type(self.agentdb_url).__name__}")
            warnings.warn(
                f"agentdb_url={self.agentdb_url!r} is not used: nt-memory's L2 (the embedding log and its "
                "hnswlib index) runs in-process over shared memory, with no AgentDB server",
                UserWarning,
                stacklevel=3,
            )
        if self.group is not None:
            self.gid  # noqa: B018 - resolves (and validates) the group now
            if self.mode not in (0o660, 0o640):
                raise ConfigError(f"group={self.group!r} needs mode=0o660 or 0o640 (got {self.mode:#o})")

    @property
    def gid(self) -> int | None:
        """The group a shared system belongs to (``group``, by name or number), or None."""
        if self.group is None:
            return None
        if isinstance(self.group, int) and not isinstance(self.group, bool) and self.group >= 0:
            return self.group
        if isinstance(self.group, str):
            import grp

            try:
                return grp.getgrnam(self.group).gr_gid
            except KeyError:
                raise ConfigError(f"group={self.group!r}: no such group on this host") from None
        raise ConfigError(f"group must be a group name or number, got {self.group!r}")

    @property
    def path(self) -> str:
        return os.path.abspath(os.fspath(self.storage_path))
