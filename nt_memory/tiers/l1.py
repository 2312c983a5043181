"""L1: the hot table in shared memory, shared by every process that attaches the system by name.

Reads take no lock (a seqlock per slot; see kernels/table.py). A Python ``get`` is one xxh3 hash and
one compiled call with integer and bytes arguments; ``@njit`` code calls :func:`l1_lookup` directly
and never leaves nopython mode::

    import numba, numpy as np
    from nt_memory.tiers.l1 import HotCache, l1_lookup
    from nt_memory.tiers.codec import array_data_offset

    cache = HotCache.attach("desk1")
    handle = cache.njit_handle()                   # int64 array: this handle's addresses
    h, key = cache.key_hash("agent_1", "position"), cache.key_array("agent_1", "position")
    out = np.empty(cache.max_value_bytes, np.uint8)

    @numba.njit
    def on_tick(handle, h, key, out, price):
        r = l1_lookup(handle, h, key, out)         # len << 8 | tag, or a negative status
        if r < 0:
            return 0.0
        n = r >> 8
        pos = out[array_data_offset(out):n].view(np.float64)   # stored as a float64 array
        return pos[0] * price

The handle is valid until ``cache.close()``; after it, ``l1_lookup`` returns ``status.CLOSED``. Do
not close a cache while another thread is still inside ``@njit`` code that uses its handle.

Threads: a ``HotCache`` may be shared by any number of threads. Kernels run without the GIL, so
every thread reads into its own output buffer (made on its first read); nothing a thread reads
passes through memory another thread writes.
"""

from __future__ import annotations

import threading
import time
from typing import Any, NoReturn

import numpy as np
import xxhash

from nt_memory.durations import duration_ns, expiry_ns
from nt_memory.errors import ConfigError, CorruptSegment, InvalidKey, SegmentError, raise_status
from nt_memory.kernels import Compiled, lazy, on_first_use
from nt_memory.kernels import status as S
from nt_memory.kernels.layout.arena import (
    ARENA_BUMP_IDX,
    ARENA_CLASS_SIZE_IDX,
    ARENA_DATA_BYTES_IDX,
    ARENA_HDR_WORDS,
    ARENA_USED_BYTES_IDX,
    BLOCK_HDR_BYTES,
    class_sizes,
)
from nt_memory.kernels.layout.table import (
    CTX_ACCESS_IDX,
    CTX_ARENA_BYTES_IDX,
    CTX_ARENA_DATA_IDX,
    CTX_ARENA_IDX,
    CTX_BEAT_IDX,
    CTX_CLASS_SIZE_IDX,
    CTX_HASH_MASK_IDX,
    CTX_JOURNAL_BYTES_IDX,
    CTX_JOURNAL_DATA_IDX,
    CTX_JOURNAL_IDX,
    CTX_MAX_KEY_IDX,
    CTX_MAX_VALUE_IDX,
    CTX_MEMBER_IDX,
    CTX_NCLASSES_IDX,
    CTX_NSLOTS_IDX,
    CTX_NSTRIPES_IDX,
    CTX_OPEN_IDX,
    CTX_OUT_BYTES_IDX,
    CTX_OWNER_IDX,
    CTX_SLOTS_IDX,
    CTX_STRIPES_IDX,
    CTX_TABLE_IDX,
    CTX_TRACK_ACCESS_IDX,
    CTX_WORDS,
    HDR_COUNT_IDX,
    HDR_DEFAULT_TTL_IDX,
    HDR_DELETES_IDX,
    HDR_EVICTIONS_IDX,
    HDR_EXPIRATIONS_IDX,
    HDR_HASH_MASK_IDX,
    HDR_INSERTS_IDX,
    HDR_MAX_ENTRIES_IDX,
    HDR_MAX_KEY_IDX,
    HDR_MAX_VALUE_IDX,
    HDR_NSLOTS_IDX,
    HDR_NSTRIPES_IDX,
    HDR_RECOUNT_IDX,
    HDR_REHASHES_IDX,
    HDR_REPAIRS_IDX,
    HDR_RETIRED_HITS_IDX,
    HDR_RETIRED_MISSES_IDX,
    HDR_TOMBS_IDX,
    HDR_TRACK_ACCESS_IDX,
    HDR_UPDATES_IDX,
    J_IF_EXPIRED,
    MEMBER_HITS_IDX,
    MEMBER_MISSES_IDX,
    RESERVED_HASHES,
    SLOT_BYTES,
    SLOT_EXPIRY_IDX,
    SLOT_HASH_IDX,
    SLOT_REF_IDX,
    SLOT_WORDS,
    TABLE_HDR_BYTES,
    TOMB,
)
from nt_memory.native import fast
from nt_memory.shm import layout as L
from nt_memory.shm.forks import forked_error, guard
from nt_memory.shm.journal_layout import JournalLayout
from nt_memory.shm.l1_layout import MAX_ARENA_BYTES, ArenaLayout, L1Layout
from nt_memory.shm.owned import BoundedWait
from nt_memory.shm.system import PartSpec, System
from nt_memory.tiers.codec import TAG_BYTES, decode, encode

KA = lazy("arena", globals())
KT = lazy("table", globals())
KW = lazy("words", globals())
KX = lazy("repair", globals())
cabi = lazy("cabi", globals())

# ``l1_lookup``, the kernel @njit callers use, comes from kernels/table.py on first use, so that
# importing this module (an observer does) does not import numba.
__getattr__ = on_first_use(globals(), l1_lookup="table.l1_lookup")

MAX_ENTRIES_LIMIT = 1 << 30
MAX_KEY_BYTES_LIMIT = 64 * 1024
MAX_VALUE_BYTES_LIMIT = 1 << 20
DEFAULT_MAX_KEY_BYTES = 256
DEFAULT_MAX_VALUE_BYTES = 64 * 1024
DEFAULT_BYTES_PER_ENTRY = 256
_PREFIX_CACHE_LIMIT = 4096
LIVE_COUNT_CHUNK = 1 << 20  # slots counted at once by len()

_xxh = xxhash.xxh3_64_intdigest


class _Buffer:
    __slots__ = ("arr", "addr", "mv")

    def __init__(self, nbytes: int):
        self.arr = np.zeros(nbytes, np.uint8)
        self.addr = int(self.arr.ctypes.data)
        self.mv = self.arr.data


class _Scratch(threading.local):
    """One output buffer per thread (``.buf``), made on the thread's first read."""

    def __init__(self, nbytes: int):
        self.buf = _Buffer(nbytes)


class _Kernels:
    """The table kernels' compiled entry points for Python's calls, each bound on first use:
    compiling one is seconds of the first run on a fresh machine (and loading it from numba's
    cache, milliseconds of every process's first call), so a process pays only for the calls
    it makes. ``get`` and ``put`` are bound when a handle opens (every handle reads and writes)."""

    get: Any = Compiled("table.table_get", "INT", "INT", "BYTES", "INT")
    put: Any = Compiled("table.table_put_bytes", "INT", "INT", "BYTES", "BYTES", "INT", "INT", "INT", "INT", "BYTES")
    contains: Any = Compiled("table.table_contains", "INT", "INT", "BYTES")
    delete: Any = Compiled("table.table_delete", "INT", "INT", "BYTES", "INT")
    version: Any = Compiled("table.table_stripe_version", "INT", "INT")
    lock_owners: Any = Compiled("repair.table_lock_owners", "INT", "INT")
    lock_stripe: Any = Compiled("table.table_lock_stripe", "INT", "INT")
    unlock_stripe: Any = Compiled("table.table_unlock_stripe", "INT", "INT")


def _positive_int(name: str, value, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if not 1 <= value <= limit:
        raise ConfigError(f"{name}={value} is out of range: must be between 1 and {limit:,}")
    return int(value)


def ttl_to_ns(ttl, name: str = "ttl") -> int:
    """A ttl (seconds or timedelta, > 0) in nanoseconds; ``None`` or ``inf`` -> 0 (no expiry)."""
    return duration_ns(ttl, name)


def batch_items(items) -> list | tuple:
    """A ``put_many``'s items as the compiled batch takes them: a dict's items, a list or tuple as
    it is (no Python pass over it), any other iterable listed."""
    if isinstance(items, dict):
        return list(items.items())
    return items if type(items) is list or type(items) is tuple else list(items)


def checked_pairs(items) -> list[tuple]:
    """``(key, value)`` tuples of ``items``; ConfigError if one is not a pair."""
    pairs = [tuple(p) for p in items]
    if any(len(p) != 2 for p in pairs):
        raise ConfigError("items must be a dict or an iterable of (key, value) pairs")
    return pairs


_CLOSED_CTX = np.zeros(CTX_WORDS, np.int64)  # what a handle that never opened reads: closed


class HotCache:
    """The L1 hot table of a system. Thread- and process-safe; reads never take a lock.

    >>> cache = HotCache.create("desk1", max_entries=100_000)      # doctest: +SKIP
    >>> cache.put("agent_1", "position", {"qty": 10})               # doctest: +SKIP
    >>> cache.get("agent_1", "position")                            # doctest: +SKIP
    {'qty': 10}
    """

    # Class-level defaults: a half-built or forked HotCache can always close() and repr().
    name = "?"
    _ctx = _CLOSED_CTX
    _forked_from = 0
    PARTS: tuple[str, ...] = ("l1", "arena")

    # ------------------------------------------------------------------------------- construction
    @classmethod
    def part_specs(cls, config, store=None) -> list[PartSpec]:
        """The Part protocol's specs (shm/parts.py), from a MemoryConfig's ``cache_config``."""
        cc = config.cache_config
        return cls.l1_specs(
            cc.max_entries,
            cc.arena_bytes,
            None,
            max_key_bytes=cc.max_key_bytes,
            max_value_bytes=cc.max_value_bytes,
            track_access=cc.track_access,
        )

    @staticmethod
    def l1_specs(
        max_entries: int = 100_000,
        arena_bytes: int | None = None,
        ttl=None,
        *,
        max_key_bytes: int = DEFAULT_MAX_KEY_BYTES,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        track_access: bool = True,
        hash_bits: int = 64,
    ) -> list[PartSpec]:
        """Validate the L1 settings and describe its two segments (for ``System.create``); the
        table's spec records the settings as the system config's ``l1``."""
        max_entries = _positive_int("max_entries", max_entries, MAX_ENTRIES_LIMIT)
        max_key_bytes = _positive_int("max_key_bytes", max_key_bytes, MAX_KEY_BYTES_LIMIT)
        max_value_bytes = _positive_int("max_value_bytes", max_value_bytes, MAX_VALUE_BYTES_LIMIT)
        hash_bits = _positive_int("hash_bits", hash_bits, 64)
        ttl_ns = ttl_to_ns(ttl)
        max_block = BLOCK_HDR_BYTES + max_key_bytes + max_value_bytes
        if arena_bytes is None:
            arena_bytes = max(max_entries * DEFAULT_BYTES_PER_ENTRY, 4 * max_block, 1 << 20)
        arena_bytes = _positive_int("arena_bytes", arena_bytes, MAX_ARENA_BYTES)
        if arena_bytes < 2 * max_block:
            raise ConfigError(
                f"arena_bytes={arena_bytes:,} is too small: it must hold at least two of the largest "
                f"values ({2 * max_block:,} bytes with max_key_bytes={max_key_bytes}, "
                f"max_value_bytes={max_value_bytes})"
            )
        hash_mask = (1 << min(hash_bits, 63)) - 1  # slot words are int64: hashes keep 63 bits
        table = L1Layout.for_capacity(max_entries)
        arena = ArenaLayout.for_size(arena_bytes, max_block)

        def init_table(seg):
            table.init(
                seg,
                max_entries=max_entries,
                max_key=max_key_bytes,
                max_value=max_value_bytes + 1,  # + the codec's tag byte
                track_access=track_access,
                hash_mask=hash_mask,
                default_ttl_ns=ttl_ns,
            )

        settings = {
            "l1": {
                "max_entries": max_entries,
                "arena_bytes": arena.data_bytes,
                "max_key_bytes": max_key_bytes,
                "max_value_bytes": max_value_bytes,
                "ttl_ns": ttl_ns,
                "track_access": bool(track_access),
            }
        }
        return [
            PartSpec("l1", L.KIND_L1, table.total_bytes, table.params, init_table, settings),
            PartSpec("arena", L.KIND_ARENA, arena.total_bytes, arena.params, arena.init),
        ]

    @classmethod
    def create(
        cls,
        name: str,
        max_entries: int = 100_000,
        arena_bytes: int | None = None,
        ttl=None,
        *,
        max_key_bytes: int = DEFAULT_MAX_KEY_BYTES,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        track_access: bool = True,
        mode: int = 0o600,
        label: str = "",
        _hash_bits: int = 64,
    ) -> HotCache:
        """Create a new system named ``name`` holding an L1 table of ``max_entries`` entries.

        ``arena_bytes`` is the shared value storage (default 256 bytes per entry, reserved up front);
        ``ttl`` (seconds) is the default stay of an entry; ``max_key_bytes`` bounds
        ``len(namespace) + 1 + len(key)`` in UTF-8 and ``max_value_bytes`` an encoded value.
        ``_hash_bits`` truncates the hash (a test hook that forces collisions).

        Raises ``SegmentExists`` if the name is taken, ``ConfigError`` for a bad setting,
        ``CapacityError`` if ``/dev/shm`` cannot hold it.
        """
        specs = cls.l1_specs(
            max_entries,
            arena_bytes,
            ttl,
            max_key_bytes=max_key_bytes,
            max_value_bytes=max_value_bytes,
            track_access=track_access,
            hash_bits=_hash_bits,
        )
        return cls._over(System.create(name, specs, {}, mode=mode, label=label))

    @classmethod
    def attach(cls, name: str | System, *, timeout: float = 5.0, label: str = "") -> HotCache:
        """Attach to the L1 table of an existing system by name (``SegmentNotFound`` if none). Given
        an attached :class:`System` instead (the Part protocol, shm/parts.py), a view over it that
        leaves the system open when closed."""
        if isinstance(name, System):
            return cls(name, owns_system=False)
        return cls._over(System.attach(name, timeout=timeout, label=label))

    @classmethod
    def _over(cls, system: System) -> HotCache:
        """A cache that owns ``system``; the system is closed if the cache cannot be built on it."""
        try:
            return cls(system)
        except BaseException:
            system.close()
            raise

    def __init__(self, system: System, owns_system: bool = True):
        missing = [p for p in self.PARTS if p not in system.parts]
        if missing:
            raise SegmentError(f"system {system.name!r} has no L1 table (missing parts {missing})")
        self.system = system
        self.name = system.name
        self._owns_system = owns_system
        tseg = system.parts["l1"]
        aseg = system.parts["arena"]
        tl = L1Layout.from_segment(tseg)
        al = ArenaLayout.from_segment(aseg)
        self._hdr = tseg.region(tl.table_offset, TABLE_HDR_BYTES, np.int64)
        self._slot_words = tseg.region(tl.slots_offset, tl.nslots * SLOT_BYTES, np.int64)  # read only
        self._ahdr = aseg.region(al.arena_offset, ARENA_HDR_WORDS * 8, np.int64)
        sizes = class_sizes(al.max_block_bytes)
        self._layouts = (tl, al, sizes)
        self._check_headers(tl, al, sizes)
        self.max_key_bytes = int(self._hdr[HDR_MAX_KEY_IDX])
        self.max_value_bytes = int(self._hdr[HDR_MAX_VALUE_IDX])  # encoded, tag included
        self.max_entries = int(self._hdr[HDR_MAX_ENTRIES_IDX])
        self.default_ttl_ns = int(self._hdr[HDR_DEFAULT_TTL_IDX])
        self._mask = int(self._hdr[HDR_HASH_MASK_IDX])
        self._track_access = bool(self._hdr[HDR_TRACK_ACCESS_IDX])
        # The kernels take every size from this private context, never from the shared headers.
        ctx = np.zeros(CTX_WORDS, np.int64)
        ctx[CTX_TABLE_IDX] = tseg.address + tl.table_offset
        ctx[CTX_STRIPES_IDX] = tseg.address + tl.stripes_offset
        ctx[CTX_SLOTS_IDX] = tseg.address + tl.slots_offset
        ctx[CTX_ACCESS_IDX] = tseg.address + tl.access_offset
        ctx[CTX_NSLOTS_IDX] = tl.nslots
        ctx[CTX_NSTRIPES_IDX] = tl.nstripes
        ctx[CTX_ARENA_IDX] = aseg.address + al.arena_offset
        ctx[CTX_ARENA_DATA_IDX] = aseg.address + al.data_offset
        ctx[CTX_ARENA_BYTES_IDX] = al.data_bytes
        ctx[CTX_MAX_KEY_IDX] = self.max_key_bytes
        ctx[CTX_MAX_VALUE_IDX] = self.max_value_bytes
        ctx[CTX_TRACK_ACCESS_IDX] = int(self._track_access)
        ctx[CTX_HASH_MASK_IDX] = self._mask
        ctx[CTX_NCLASSES_IDX] = len(sizes)
        ctx[CTX_CLASS_SIZE_IDX : CTX_CLASS_SIZE_IDX + len(sizes)] = sizes
        # Every thread's output buffer has this size: the largest value + room for word-wise copies.
        ctx[CTX_OUT_BYTES_IDX] = self.max_value_bytes + 8
        ctx[CTX_OWNER_IDX] = system.owner
        if system.slot >= 0:
            ctx[CTX_MEMBER_IDX] = system.members.stats_address(system.slot)
            ctx[CTX_BEAT_IDX] = system.members.heartbeat_address(system.slot)
        else:  # an observer: its counters go to a private scratch word pair
            self._observer_stats = np.zeros(2, np.int64)
            ctx[CTX_MEMBER_IDX] = self._observer_stats.ctypes.data
        if "journal" in system.parts:
            jseg = system.parts["journal"]
            jl = JournalLayout.from_segment(jseg)
            ctx[CTX_JOURNAL_IDX] = jseg.address + jl.ring_offset
            ctx[CTX_JOURNAL_DATA_IDX] = jseg.address + jl.data_offset
            ctx[CTX_JOURNAL_BYTES_IDX] = jl.capacity
        ctx[CTX_OPEN_IDX] = 1
        self._ctx = ctx
        guard(self)
        self._ctx_addr = int(ctx.ctypes.data)
        self._nstripes = tl.nstripes
        self._nslots = tl.nslots
        self._scratch = _Scratch(int(ctx[CTX_OUT_BYTES_IDX]))
        self._prefixes: dict = {}
        self._beat_at = 0
        if system.owner:  # an observer (nt-memory inspect, top) reads counters: it binds on first use
            self._bind_kernels()

    def _bind_kernels(self) -> None:
        """Bind the table's get and put (loading them from numba's cache, or compiling them)."""
        self._k_get = _Kernels.get
        self._k_put = _Kernels.put
        self._bind_get()

    def __getattr__(self, name: str) -> Any:
        # Only for attributes not found: an observer's first get or put binds the kernels.
        if name in ("_k_get", "_k_put", "_get") and "_ctx_addr" in self.__dict__:
            self._bind_kernels()
            return self.__dict__[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _check_headers(self, tl: L1Layout, al: ArenaLayout, sizes: np.ndarray) -> None:
        """Refuse headers that disagree with the checksummed layout params or hold impossible
        limits: the values copied into the private context must be safe to trust."""
        problems = self._header_problems(tl, al, sizes)
        if problems:
            raise CorruptSegment(
                f"system {self.name!r}: the L1 headers disagree with their layouts ({', '.join(problems)})"
            )

    def _header_problems(self, tl: L1Layout, al: ArenaLayout, sizes: np.ndarray) -> list[str]:
        h, a = self._hdr, self._ahdr
        problems = []
        if int(h[HDR_NSLOTS_IDX]) != tl.nslots or int(h[HDR_NSTRIPES_IDX]) != tl.nstripes:
            problems.append("table shape")
        if not 1 <= int(h[HDR_MAX_KEY_IDX]) <= MAX_KEY_BYTES_LIMIT:
            problems.append(f"max key {int(h[HDR_MAX_KEY_IDX])}")
        if not 2 <= int(h[HDR_MAX_VALUE_IDX]) <= MAX_VALUE_BYTES_LIMIT + 1:
            problems.append(f"max value {int(h[HDR_MAX_VALUE_IDX])}")
        if BLOCK_HDR_BYTES + int(h[HDR_MAX_KEY_IDX]) + int(h[HDR_MAX_VALUE_IDX]) > al.max_block_bytes + 1:
            problems.append("limits larger than the arena's blocks")
        if not 1 <= int(h[HDR_MAX_ENTRIES_IDX]) <= tl.nslots // 2:
            problems.append(f"max entries {int(h[HDR_MAX_ENTRIES_IDX])}")
        if int(a[ARENA_DATA_BYTES_IDX]) != al.data_bytes or int(a[1]) != len(sizes):
            problems.append("arena size")
        elif not np.array_equal(a[ARENA_CLASS_SIZE_IDX : ARENA_CLASS_SIZE_IDX + len(sizes)], sizes):
            problems.append("arena classes")
        return problems

    def verify(self) -> list[str]:
        """The Part protocol's check (shm/parts.py): the headers against their layouts, then every
        slot: a live one must name a live arena block whose key hashes to the slot's hash, and the
        live count must match the table's. Reads only; a concurrent writer may make it report a
        slot it was changing, so verify a quiet system. ``[]`` when sound."""
        self._check_open()
        tl, al, sizes = self._layouts
        problems = [f"header: {p}" for p in self._header_problems(tl, al, sizes)]
        if problems:
            return problems
        slots = self.system.parts["l1"].region(tl.slots_offset, tl.nslots * SLOT_BYTES, np.int64)
        data = self.system.parts["arena"].region(al.data_offset, al.data_bytes, np.int64)
        hashes = slots[SLOT_HASH_IDX::SLOT_WORDS]
        live = np.flatnonzero(hashes > TOMB)
        for i in live:
            ref = int(slots[i * SLOT_WORDS + SLOT_REF_IDX])
            start, vlen, klen = KA.arena_block(data, al.data_bytes, ref)
            if start < 0:
                problems.append(f"slot {i}: reference {ref:#x} names no live arena block")
                continue
            key = data.view(np.uint8)[start + vlen : start + vlen + klen].tobytes()
            if self.hash_bytes(key) != int(hashes[i]):
                problems.append(f"slot {i}: its block's key does not hash to the slot's hash")
            if len(problems) >= 20:
                problems.append("... (more not listed)")
                break
        if len(live) != int(self._hdr[HDR_COUNT_IDX]):
            problems.append(f"{len(live)} live slots, the table counts {int(self._hdr[HDR_COUNT_IDX])}")
        return problems

    # ------------------------------------------------------------------------------------- keys
    def _prefix(self, ns) -> bytes:
        if type(ns) is str:
            raw = ns.encode("utf-8")
        elif type(ns) is bytes:
            raw = ns
        else:
            raise InvalidKey(f"namespace must be str or bytes, got {type(ns).__name__}")
        if not raw or b"\0" in raw:
            raise InvalidKey(f"namespace {ns!r} must be non-empty and contain no NUL character")
        if len(self._prefixes) >= _PREFIX_CACHE_LIMIT:
            self._prefixes.clear()
        prefix = self._prefixes[ns] = raw + b"\0"
        return prefix

    def prefix(self, ns) -> bytes:
        """``namespace \\0`` as stored (validated): what every key of ``ns`` starts with."""
        return self._prefixes.get(ns) or self._prefix(ns)

    def key_bytes(self, ns, key) -> bytes:
        """The stored form of a key: ``namespace \\0 key`` in UTF-8."""
        prefix = self._prefixes.get(ns) or self._prefix(ns)
        t = type(key)
        if t is str:
            kb = prefix + key.encode("utf-8")
        elif t is bytes:
            kb = prefix + key
        else:
            raise InvalidKey(f"key must be str or bytes, got {t.__name__}")
        if len(kb) == len(prefix):
            raise InvalidKey("key must not be empty")
        return kb

    def hash_bytes(self, kb: bytes) -> int:
        h = _xxh(kb) & self._mask
        return h + RESERVED_HASHES if h < RESERVED_HASHES else h

    def key_hash(self, ns, key) -> int:
        """The table hash of a key, for :func:`l1_lookup` (xxh3-64, remapped above markers)."""
        return self.hash_bytes(self.key_bytes(ns, key))

    def key_array(self, ns, key) -> np.ndarray:
        """The stored key bytes as a uint8 array, for :func:`l1_lookup`."""
        return np.frombuffer(self.key_bytes(ns, key), dtype=np.uint8).copy()

    def njit_handle(self) -> np.ndarray:
        """This handle's context (an int64 array of addresses) for :func:`l1_lookup`."""
        return self._ctx

    # ------------------------------------------------------------------------------------- reads
    def get(self, ns, key, default=None):
        """The value stored under ``(ns, key)``, or ``default`` if absent or expired. No lock.

        Raises ``InvalidKey`` for a key that is not str/bytes, ``ValueTooLarge`` for one over
        ``max_key_bytes``, ``SegmentClosed`` after ``close()``. Thread-safe.
        """
        return self._get(ns, key, default)  # replaced per instance by _bind_get's closure

    def _bind_get(self) -> None:
        # Per instance, over the methods: one attribute lookup and one C call per get or put.
        self.get = self._get = self.make_getter(self._get_slow)  # type: ignore[method-assign]
        if fast is not None:
            slow_put = HotCache.put.__get__(self)
            self.put = self.make_putter(self.default_ttl_ns, 0, self.max_value_bytes, slow_put)  # type: ignore[method-assign]

    def make_getter(self, on_miss):
        """The fast path of ``get``: one C call that hashes, probes and copies (the compiled
        extension), or, on the pure path, a closure over locals. On anything but a hit it returns
        ``on_miss(status, hash, stored key, default)``: the tiers above pass their lower-tier
        lookup."""
        python = self._python_getter(on_miss)
        if fast is None:
            return python
        out_bytes = int(self._ctx[CTX_OUT_BYTES_IDX])
        return fast.getter(
            self._ctx_addr,
            cabi.L1_GET.address,
            self.max_key_bytes,
            out_bytes,
            self._ctx,
            on_miss,
            decode,
            python,
            cabi.L1_GET_MANY,  # compiled on the first batch
        )

    def make_putter(self, l1_ttl_ns: int, flags: int, max_encoded: int, slow):
        """The fast path of a ``put(ns, key, value)`` of ``bytes`` (the compiled extension; None on
        the pure path): one C call that encodes, hashes and writes with ``flags`` (J_*), the entry
        staying ``l1_ttl_ns`` in L1. Every other call, and every write the kernel does not
        complete, goes to ``slow``, which has the same signature."""
        if fast is None:
            return slow
        return fast.putter(
            self._ctx_addr,
            cabi.L1_PUT.address,
            self.max_key_bytes,
            max_encoded,
            l1_ttl_ns,
            flags,
            self._ctx,
            slow,
            cabi.L1_PUT_MANY,  # compiled on the first batch
        )

    def _python_getter(self, on_miss):
        """The pure path's ``get``: a closure over locals (each attribute lookup it avoids is ~20 ns
        of a ~600 ns call)."""
        prefixes = self._prefixes
        key_bytes = self.key_bytes
        mask = self._mask
        k_get = self._k_get
        ctx_addr = self._ctx_addr
        scratch = self._scratch
        xxh = _xxh
        reserved = RESERVED_HASHES
        tag_bytes = TAG_BYTES

        def get(ns, key, default=None):
            prefix = prefixes.get(ns)
            if prefix is not None and type(key) is str and key:
                kb = prefix + key.encode()
            else:
                kb = key_bytes(ns, key)
            h = xxh(kb) & mask
            if h < reserved:
                h += reserved
            buf = scratch.buf
            r = k_get(ctx_addr, h, kb, buf.addr)
            if r >= 0:
                if r & 0xFF == tag_bytes:
                    return buf.mv[1 : r >> 8].tobytes()
                return decode(buf.mv[: r >> 8])
            return on_miss(r, h, kb, default)

        return get

    def get_many(self, ns, keys, default=None) -> list:
        """The values of ``keys`` (a list, tuple or iterable) under ``ns``, in order, ``default``
        for each absent one: one compiled call for the batch (the extension), else a loop of
        ``get``. Raises as ``get`` would for the first bad key. Thread-safe."""
        return self.get_batch(self._get, ns, keys, default)

    def put_many(self, ns, items, ttl=None) -> int:
        """Store many ``(key, value)`` pairs under ``ns`` (a dict or an iterable of pairs), in
        order, as ``put`` each would; ``bytes`` values without a ``ttl`` go in one compiled call.
        Returns how many were stored. Thread-safe."""
        pairs = batch_items(items)
        done = self.put_batch(self.put, ns, pairs, 0) if ttl is None else 0
        for key, value in checked_pairs(pairs[done:]):
            self.put(ns, key, value, ttl)
        return len(pairs)

    @staticmethod
    def get_batch(get, ns, keys, default) -> list:
        """A batch through getter ``get`` (:meth:`make_getter`'s): its compiled ``many`` when it has
        one and takes the batch, else one ``get`` per key."""
        batch = getattr(get, "many", None)
        if type(keys) is not list and type(keys) is not tuple:
            keys = list(keys)
        if batch is not None:
            found = batch(ns, keys, default)
            if found is not None:
                return found
        return [get(ns, key, default) for key in keys]

    @staticmethod
    def put_batch(put, ns, pairs: list | tuple, data_ttl_ns: int) -> int:
        """How many of ``pairs`` (``(key, value)`` tuples, a list or tuple) putter ``put`` (:meth:`make_putter`'s)
        stored in one compiled call, in order: all of them, the ones before the first that met a
        busy stripe or a full journal, or none (no extension, or a pair it does not take: every
        value must be ``bytes`` and every key valid). The caller stores the rest its own way."""
        batch = getattr(put, "many", None)
        if batch is None or not pairs:
            return 0
        return max(0, batch(ns, pairs, data_ttl_ns))

    def read_encoded(self, kb: bytes, h: int, status: int | None = None):
        """The encoded value (tag first) under stored key ``kb``/hash ``h``: ``bytes``, or
        ``S.NOT_FOUND`` / ``S.EXPIRED``. Waits out a busy writer (repairing a dead one); raises for
        anything else. ``status``: what a first attempt returned, if the caller made one. For the
        tiers above, which decode themselves."""
        buf = self._scratch.buf
        r = self._k_get(self._ctx_addr, h, kb, buf.addr) if status is None or status == S.BUSY else status
        wait = None
        while r == S.BUSY:
            wait = wait or BoundedWait(self.system, f"L1 read of {kb!r}")
            self._wait_busy(wait)
            r = self._k_get(self._ctx_addr, h, kb, buf.addr)
        if r >= 0:
            return buf.mv[: r >> 8].tobytes()
        if r in (S.NOT_FOUND, S.EXPIRED):
            return r
        self.raise_for(r, kb, None)

    def get_encoded(self, kb: bytes, h: int):
        """Same as :meth:`read_encoded` (kept for callers of the first version)."""
        return self.read_encoded(kb, h)

    def _get_slow(self, r: int, h: int, kb: bytes, default):
        found = self.read_encoded(kb, h, r)
        if found == S.EXPIRED:
            self.reclaim_expired(kb, h)
        return default if isinstance(found, int) else decode(found)

    def reclaim_expired(self, kb: bytes, h: int) -> None:
        """Remove ``kb``'s entry if its expiry has passed (a reader found it expired): it stops
        counting in ``len`` and ``stats()["entries"]`` and counts in ``"expirations"``. An entry
        rewritten meanwhile is kept."""
        self.delete_encoded(kb, h, J_IF_EXPIRED)

    def __contains__(self, item) -> bool:
        ns, key = item
        kb = self.key_bytes(ns, key)
        h = self.hash_bytes(kb)
        wait = None
        while True:
            r = _Kernels.contains(self._ctx_addr, h, kb)
            if r >= 0:
                return True
            if r in (S.NOT_FOUND, S.EXPIRED):
                return False
            if r != S.BUSY:
                self.raise_for(r, kb, None)
            wait = wait or BoundedWait(self.system, "L1 read")
            self._wait_busy(wait)

    def __len__(self) -> int:
        """Live entries in the table (an entry whose expiry has passed is not counted, removed or
        not). One pass over the slots, reading only, no lock: a count taken while writers run is a
        moment's approximation. In numpy, a million slots at a time: an observer (``inspect``)
        then loads no compiled code."""
        self._check_open()
        now = time.time_ns()
        live = 0
        for lo in range(0, self._nslots, LIVE_COUNT_CHUNK):
            part = self._slot_words[lo * SLOT_WORDS : (lo + LIVE_COUNT_CHUNK) * SLOT_WORDS].reshape(-1, SLOT_WORDS)
            expiry = part[:, SLOT_EXPIRY_IDX]
            taken = part[:, SLOT_HASH_IDX] >= RESERVED_HASHES
            live += int(np.count_nonzero(taken & ((expiry == 0) | (expiry > now))))
        return live

    # ------------------------------------------------------------------------------------ writes
    def put(self, ns, key, value, ttl=None) -> None:
        """Store ``value`` (bytes, numpy array or JSON-able) under ``(ns, key)``.

        ``ttl`` (seconds) overrides the table's default for this entry. At capacity the least
        recently used entries are evicted (CLOCK). Raises ``ValueTooLarge`` (key or value over the
        limit; nothing stored), ``InvalidKey``, ``CodecError``, ``CapacityError``. Thread-safe.
        """
        kb = self.key_bytes(ns, key)
        vb = encode(value)
        now = time.time_ns()
        if ttl is None:
            expiry = now + self.default_ttl_ns if self.default_ttl_ns else 0
        else:
            expiry = expiry_ns(now, ttl)
        self.put_encoded(kb, self.hash_bytes(kb), vb, expiry)
        if now - self._beat_at > 1_000_000_000:
            self._beat_at = now
            self.system.heartbeat(now)

    def put_encoded(
        self,
        kb: bytes,
        h: int,
        vb: bytes,
        expiry_ns: int,
        data_expiry_ns: int = 0,
        flags: int = 0,
        version: int = 0,
        emb: bytes = b"",
    ) -> int:
        """Store an already encoded value with absolute expiries (wall ns, 0 = never); ``flags`` are
        the kernel's J_* flags. Waits out BUSY/NEEDS_REHASH; returns OK, or JOURNAL_FULL / STALE
        for the tiers above to handle; raises for the rest."""
        st = self._k_put(self._ctx_addr, h, kb, vb, expiry_ns, data_expiry_ns, flags, version, emb)
        wait = None
        while st != S.OK:
            if st in (S.JOURNAL_FULL, S.STALE):
                return st
            if st not in (S.NEEDS_REHASH, S.BUSY):
                self.raise_for(st, kb, vb)
            wait = self.wait_writable(st, wait)
            st = self._k_put(self._ctx_addr, h, kb, vb, expiry_ns, data_expiry_ns, flags, version, emb)
        return st

    def try_put_encoded(
        self, kb: bytes, h: int, vb: bytes, expiry_ns: int, data_expiry_ns: int = 0, flags: int = 0
    ) -> int:
        """One attempt at :meth:`put_encoded`, which never waits: the kernel's status. For a caller
        holding the stripe (J_HELD), who must release it before any wait (a rehash or the
        flusher needs what it holds)."""
        return self._k_put(self._ctx_addr, h, kb, vb, expiry_ns, data_expiry_ns, flags, 0, b"")

    def wait_writable(self, st: int, wait: BoundedWait | None) -> BoundedWait:
        """After a write that stored nothing with NEEDS_REHASH or BUSY (and holds no stripe): rehash,
        or wait out the busy holder, repairing a dead one. Returns the wait to pass next time (it
        raises once the stall bound has passed)."""
        wait = wait or BoundedWait(self.system, "an L1 write stripe")
        if st == S.NEEDS_REHASH:
            self._rehash(wait)
        else:
            self._wait_busy(wait)
        return wait

    def delete(self, ns, key) -> bool:
        """Remove ``(ns, key)``; returns whether a live entry was removed. Thread-safe."""
        kb = self.key_bytes(ns, key)
        return self.delete_encoded(kb, self.hash_bytes(kb)) == S.OK

    def delete_encoded(self, kb: bytes, h: int, flags: int = 0) -> int:
        """Delete by stored key; returns OK, NOT_FOUND or (journaled) JOURNAL_FULL."""
        wait = None
        while True:
            st = _Kernels.delete(self._ctx_addr, h, kb, flags)
            if st in (S.OK, S.NOT_FOUND, S.JOURNAL_FULL):
                return st
            if st != S.BUSY:
                self.raise_for(st, kb, None)
            wait = wait or BoundedWait(self.system, "an L1 write stripe")
            self._wait_busy(wait)

    def stripe_version(self, h: int) -> int:
        """The write count of the stripe of ``h`` (see J_PROMOTE)."""
        return _Kernels.version(self._ctx_addr, h)

    @property
    def kernel_context(self) -> int:
        """The address of the table's kernel context (the ``ctx_addr`` of kernels/table.py), for a
        tier above that writes L1 and its own structure in one kernel call."""
        return self._ctx_addr

    def lock_stripe(self, h: int) -> None:
        """Hold the stripe of ``h`` for a multi-step write (then pass J_HELD; release with
        :meth:`unlock_stripe`). Waits, recovering dead holders, up to the stall bound."""
        wait = None
        while True:
            st = _Kernels.lock_stripe(self._ctx_addr, h)
            if st == S.OK:
                return
            if st != S.BUSY:
                self.raise_for(st, b"", None)
            wait = wait or BoundedWait(self.system, "an L1 write stripe")
            self._wait_busy(wait)

    def unlock_stripe(self, h: int) -> None:
        _Kernels.unlock_stripe(self._ctx_addr, h)

    def rehash(self) -> None:
        """Drop every tombstone now (normally automatic)."""
        self._rehash(BoundedWait(self.system, "the L1 table (rehash)"), force=True)

    def _rehash(self, wait: BoundedWait, force: bool = False) -> None:
        while True:
            st = KX.table_rehash(self._ctx_addr, force)
            if st == S.OK:
                return
            if st != S.BUSY:
                self.raise_for(st, b"", None)
            self._wait_busy(wait)

    # --------------------------------------------------------------------------- dead owners
    def lock_owners(self) -> set[int]:
        """The owner words holding a stripe, the rehash or the journal's append lock now."""
        owners = np.zeros(self._nstripes + 2, np.int64)
        n = _Kernels.lock_owners(self._ctx_addr, owners.ctypes.data)
        return {int(o) for o in owners[:n]} if n else set()

    def recover(self) -> int:
        """Repair what dead writers left: take their stripes, replay their intents, free the
        journal's append lock they held. Returns the number of locks repaired. Runs automatically
        when a read or write finds a stripe held too long; call it from Python when ``l1_lookup``
        keeps returning BUSY."""
        self._check_open()
        repaired = 0
        for owner in self.lock_owners():
            if not self.system.owner_alive(owner):
                for _ in range(1000):
                    r = KX.table_recover(self._ctx_addr, owner)
                    if r != S.BUSY:
                        break
                repaired += max(0, r)
        if self._hdr[HDR_RECOUNT_IDX]:
            # A dead writer may have stopped between a slot and its counters (kernels/table.py):
            # count again, once every stripe is free to take. If one stays held, the mark stays
            # for the next recovery or rehash.
            for _ in range(100):
                if KX.table_recount(self._ctx_addr) != S.BUSY:
                    break
        return repaired

    def _wait_busy(self, wait: BoundedWait) -> None:
        if self.recover():
            return
        owners = self.lock_owners()
        wait.pause(next(iter(owners)) if len(owners) == 1 else 0)

    def raise_for(self, st: int, kb: bytes, vb) -> NoReturn:
        """Raise the error for kernel status ``st`` met writing or reading key ``kb`` (value ``vb``)."""
        detail = ""
        if st == S.KEY_TOO_LARGE:
            detail = f"key is {len(kb)} bytes (namespace + NUL + key, UTF-8); "
            detail += f"the limit is max_key_bytes={self.max_key_bytes}"
        elif st == S.VALUE_TOO_LARGE:
            detail = f"value is {len(vb) - 1:,} bytes encoded; "
            detail += f"the limit is max_value_bytes={self.max_value_bytes - 1:,}"
        elif st == S.FULL:
            detail = f"arena_bytes={int(self._ahdr[ARENA_DATA_BYTES_IDX]):,}"
        elif st == S.CLOSED and self._forked_from:
            raise forked_error(f"HotCache {self.name!r}", self._forked_from)
        raise_status(S.NAMES.get(st, str(st)), f"L1 of system {self.name!r}", detail)

    # ------------------------------------------------------------------------------------ stats
    def stats(self) -> dict:
        """Counters of the table (shared by every process) and fill levels."""
        self._check_open()
        h = self._hdr
        hits = int(h[HDR_RETIRED_HITS_IDX])
        misses = int(h[HDR_RETIRED_MISSES_IDX])
        for m in self.system.members.members():
            hits += m.l1_hits
            misses += m.l1_misses
        if self.system.slot < 0:
            hits += int(self._observer_stats[0])
            misses += int(self._observer_stats[1])
        a = self._ahdr
        return {
            "entries": len(self),
            "slots_used": int(h[HDR_COUNT_IDX]),
            "max_entries": self.max_entries,
            "slots": self._nslots,
            "tombstones": int(h[HDR_TOMBS_IDX]),
            "hits": hits,
            "misses": misses,
            "hit_ratio": hits / (hits + misses) if hits + misses else 0.0,
            "inserts": int(h[HDR_INSERTS_IDX]),
            "updates": int(h[HDR_UPDATES_IDX]),
            "deletes": int(h[HDR_DELETES_IDX]),
            "evictions": int(h[HDR_EVICTIONS_IDX]),
            "expirations": int(h[HDR_EXPIRATIONS_IDX]),
            "rehashes": int(h[HDR_REHASHES_IDX]),
            "repairs": int(h[HDR_REPAIRS_IDX]),
            "arena_bytes": int(a[ARENA_DATA_BYTES_IDX]),
            "arena_used_bytes": int(a[ARENA_USED_BYTES_IDX]),
            "arena_touched_bytes": min(int(a[ARENA_BUMP_IDX]), int(a[ARENA_DATA_BYTES_IDX])),
            "track_access": bool(h[HDR_TRACK_ACCESS_IDX]),
            "shm_bytes": sum(s.size for s in self.system.parts.values() if s.shm_name.rsplit(".", 1)[-1] in self.PARTS),
        }

    # -------------------------------------------------------------------------------- lifetime
    def _check_open(self) -> None:
        if self._ctx[CTX_OPEN_IDX] != 1:
            self.raise_for(S.CLOSED, b"", None)

    def _forked(self) -> None:
        """In a forked child: closed (this process's copy of the context), nothing shared touched."""
        self._forked_from = self.system.opened_pid
        self._ctx[CTX_OPEN_IDX] = 0

    def __reduce__(self):
        """Pickled by name, as CPython's ``SharedMemory``: unpickling attaches in that process."""
        return (type(self).attach, (self.name,))

    @property
    def closed(self) -> bool:
        return self._ctx[CTX_OPEN_IDX] != 1

    def close(self) -> None:
        """Detach (safe to call twice). The segments stay for other processes; see ``unlink``."""
        if self._ctx[CTX_OPEN_IDX] != 1:
            return
        self._ctx[CTX_OPEN_IDX] = 0
        self._ctx[CTX_BEAT_IDX] = 0
        if self.system.slot >= 0:  # this member's counters retire into the table's
            stats = self.system.members.stats_address(self.system.slot)
            hits_addr = int(self._ctx[CTX_TABLE_IDX]) + HDR_RETIRED_HITS_IDX * 8
            KW.word_fetch_add(hits_addr, KW.word_load(stats + MEMBER_HITS_IDX * 8))
            KW.word_fetch_add(hits_addr + 8, KW.word_load(stats + MEMBER_MISSES_IDX * 8))
        self._hdr = self._ahdr = self._slot_words = None  # type: ignore[assignment]  # closed: drop the views
        if self._owns_system:
            self.system.close()

    def unlink(self) -> None:
        """Remove the system's segments by name (before or after ``close``)."""
        self.system.unlink()

    def __enter__(self) -> HotCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self)} entries"
        return f"<HotCache {self.name!r} {state}>"
