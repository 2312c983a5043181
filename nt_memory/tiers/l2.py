"""L2: similarity search over an append-only embedding log in shared memory, indexed by hnswlib.

Every put with an embedding appends a record (id, key, vector) to the log, which every attached
process can read without copying (:meth:`VectorTier.embedding` returns a read-only view). Each
process that searches keeps its own hnswlib index, synced from the log before each search (the
check costs one load when nothing is new). A record names the id it supersedes (the key's previous
embedding), so replaying the log marks replaced and deleted vectors deleted in the index with no
key map. The index is saved under ``storage_path/l2`` with the log id and position it covers; a
new process loads it and only indexes the tail.

Labels in the index are record ids; ``labels_ns`` maps them to namespace numbers for filtering.
"""

from __future__ import annotations

import bisect
import dataclasses
import fcntl
import json
import os
import secrets
import struct
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import xxhash

from nt_memory.errors import ConfigError, CorruptSegment, InvalidEmbedding, NtMemoryError, TierError
from nt_memory.kernels import Compiled, lazy
from nt_memory.kernels.layout import embedput as PL
from nt_memory.kernels.layout.embedlog import FIRST_ID_WORD, KEY_BUMP_WORD, RECORD_HDR_BYTES
from nt_memory.kernels.status import FULL, OK
from nt_memory.native import fast
from nt_memory.shm import embed_layout as E
from nt_memory.shm import layout as L
from nt_memory.shm.owned import OwnedLock
from nt_memory.shm.segment import Segment, acquire_load
from nt_memory.shm.system import PartSpec, System

JIT = lazy("_jit", globals())
KE = lazy("embedlog", globals())
KI = lazy("idmap", globals())
KW = lazy("words", globals())
P = lazy("embedput", globals())
cabi = lazy("cabi", globals())

SPACES = ("cosine", "l2", "ip")
# Measured on 20k clustered 64-d vectors (tests/tiers/test_l2.py), M=16: recall@10 0.83 at ef=100,
# 0.92 at 200, 0.98 at 400 (68, 115, 227 us a query). 320 keeps recall >= 0.95 on data whose
# clusters have full-rank noise; pass ef= per search to trade recall for speed.
DEFAULT_EF = 320
DEFAULT_M = 16
_REC_HEAD = struct.Struct("<qqq")  # kind | key length << 32, key offset, previous id + 1
EF_CONSTRUCTION = 200
# Records whose vectors stay in shared memory beyond the saved index's position (the log's bound):
# past it, the process that indexes saves its index and releases the vectors it covers (128 MiB of
# 128-d float32). 0: never release.
DEFAULT_WINDOW = 262_144
SYNC_BATCH = 10_000  # vectors indexed per hnswlib call (and between two ``beat``s of ``sync``)
CHUNK_HEAD_BYTES = E.CHUNK_WORDS * 8
MAX_CHUNKS = 1 << 16
_NO_LABELS = np.zeros(0, np.uint64)  # hnswlib's answer when nothing can be returned
_NO_DISTS = np.zeros(0, np.float32)


@dataclasses.dataclass(frozen=True)
class IndexParams:
    """hnswlib's build parameters (``m``, ``ef_construction``) and the default search breadth."""

    m: int = DEFAULT_M
    ef_construction: int = EF_CONSTRUCTION
    ef: int = DEFAULT_EF


class Hit(NamedTuple):
    """A search result: ``distance`` is the index's (cosine: 1 - cos; l2: squared L2). A named
    tuple: immutable, and made in half a frozen dataclass's time (ten per search)."""

    namespace: str
    key: str
    distance: float
    value: object = None


def _float32_block(vecs, dim: int, ndim: int, what: str) -> np.ndarray:
    """``vecs`` as a contiguous float32 array of ``ndim`` dimensions whose last is ``dim``, every
    component finite, or ``InvalidEmbedding`` naming ``what`` (and, for a block, the bad row)."""
    if (
        ndim == 1
        and type(vecs) is np.ndarray
        and vecs.dtype == np.float32
        and vecs.shape == (dim,)
        and vecs.flags.c_contiguous
        and _all_finite(vecs)
    ):
        return vecs  # the common query and put, checked in ~0.5 us (the general path: ~3 us)
    if isinstance(vecs, np.ndarray):
        arr = vecs
    elif isinstance(vecs, list | tuple):
        arr = np.asarray(vecs)
    else:
        raise InvalidEmbedding(f"{what} must be a numpy array or a list of floats, got {type(vecs).__name__}")
    # Integers are numbers too (quantized embeddings, a list like [1, 0, 2]): converted to float32,
    # which holds every integer up to 2**24 exactly. Booleans, strings, objects are refused.
    if arr.dtype.kind not in "fiu" or arr.dtype == np.bool_:
        raise InvalidEmbedding(f"{what} must hold floats (or integers, converted to float32), got dtype {arr.dtype}")
    if arr.ndim != ndim or arr.shape[-1] != dim or arr.shape[0] == 0:
        block = "" if ndim == 1 else f"expected a 2-D (n, {dim}) array; "
        raise InvalidEmbedding(f"{what} has shape {arr.shape}; {block}this system's embedding_dim is {dim}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(arr)
    if not finite.all():
        where = "" if ndim == 1 else f" in row {int(np.argmin(finite.all(axis=1)))}"
        raise InvalidEmbedding(f"{what} has NaN or infinite components{where}")
    return arr


def _all_finite(vec: np.ndarray) -> bool:
    global _finite_entry
    if _finite_entry is None:
        _finite_entry = JIT.entry_point(KE.all_finite, JIT.F32_ARRAY)
    return _finite_entry(vec)


_finite_entry: Any = None


def hits_from_keys(found) -> list[Hit]:
    """:class:`Hit` s from ``(namespace \\0 key bytes, distance)`` pairs (values None), split
    at the first NUL and decoded as UTF-8 with errors replaced, as ``_fastpath.hits`` does."""
    out = []
    names: dict[bytes, str] = {}  # a search's hits mostly share one namespace: decoded once
    for kb, dist in found:
        ns_b, _, key_b = kb.partition(b"\0")
        ns = names.get(ns_b)
        if ns is None:
            ns = names[ns_b] = ns_b.decode("utf-8", "replace")
        out.append(Hit(ns, key_b.decode("utf-8", "replace"), dist))
    return out


def validate_embedding(vec, dim: int) -> np.ndarray:
    """A contiguous float32 vector of ``dim`` finite components, or ``InvalidEmbedding``."""
    return _float32_block(vec, dim, 1, "embedding")


def validate_embeddings(vecs, dim: int) -> np.ndarray:
    """An ``(n, dim)`` block of them at once (``put_many``, ``search_similar_many``)."""
    return _float32_block(vecs, dim, 2, "embeddings")


def check_search_args(top_k, ef) -> None:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"top_k={top_k!r} must be a positive integer")
    if ef is not None and (isinstance(ef, bool) or not isinstance(ef, int) or not 1 <= ef <= 100_000):
        raise ConfigError(f"ef={ef!r} must be an integer between 1 and 100,000")


def _key_hash(kb: bytes) -> tuple[int, int]:
    """A key's 128-bit XXH3 as two signed 64-bit halves (a false match is a 2**-128 event)."""
    h = xxhash.xxh3_128_intdigest(kb)
    lo, hi = h & 0xFFFFFFFFFFFFFFFF, h >> 64
    return lo - (1 << 64) if lo >= 1 << 63 else lo, hi - (1 << 64) if hi >= 1 << 63 else hi


class LatestIds:
    """Each key's latest record id in this process (:mod:`nt_memory.kernels.idmap`): 24 bytes a
    slot, the table doubling at 70% full."""

    _put: Any = Compiled("idmap.idmap_put", "INT_ARRAY", "INT_ARRAY", "INT_ARRAY", "INT", "INT", "INT")
    _get: Any = Compiled("idmap.idmap_get", "INT_ARRAY", "INT_ARRAY", "INT_ARRAY", "INT", "INT")

    def __init__(self, capacity: int = 1024, context: np.ndarray | None = None):
        self._context = context  # a put context (kernels/embedput.py) that names the arrays
        self._alloc(capacity)
        self.live = 0

    def _alloc(self, capacity: int) -> None:
        self.lo = np.zeros(capacity, np.int64)
        self.hi = np.zeros(capacity, np.int64)
        self.vals = np.zeros(capacity, np.int64)
        self.used = 0  # live entries and tombstones
        if self._context is not None:
            c = self._context
            c[PL.LC_IDS_LO], c[PL.LC_IDS_HI] = self.lo.ctypes.data, self.hi.ctypes.data
            c[PL.LC_IDS_VALS], c[PL.LC_IDS_LEN] = self.vals.ctypes.data, capacity

    def get(self, kb: bytes, h: tuple[int, int] | None = None) -> int:
        """``kb``'s id, or -1 (``h``: its :func:`_key_hash`, if the caller has it)."""
        return self._get(self.lo, self.hi, self.vals, *(h or _key_hash(kb)))

    def room(self) -> bool:
        """Whether one more key keeps the map under its load bound (else :meth:`put` grows it)."""
        return (self.used + 1) * 10 <= len(self.vals) * 7

    def counted(self, r: int) -> None:
        """Count a put the kernel made (``idmap_put``'s answer ``r``)."""
        if r < 0:
            raise TierError("the latest-id map is full")  # unreachable under the load bound
        self.used += r == 1
        self.live += r != 0

    def put(self, kb: bytes, ident: int, h: tuple[int, int] | None = None) -> None:
        if not self.room():
            old = (self.lo, self.hi, self.vals)
            self._alloc(len(self.vals) * 2 if self.live * 10 > len(self.vals) * 3 else len(self.vals))
            self.used = self.live = KI.idmap_move(*old, self.lo, self.hi, self.vals)
        self.counted(self._put(self.lo, self.hi, self.vals, *(h or _key_hash(kb)), ident))

    def pop(self, kb: bytes, h: tuple[int, int] | None = None) -> None:
        self.live -= KI.idmap_delete(self.lo, self.hi, self.vals, *(h or _key_hash(kb)))

    @property
    def nbytes(self) -> int:
        return self.lo.nbytes + self.hi.nbytes + self.vals.nbytes


class VectorTier:
    """This process's view of the embedding log, and its (lazily built) hnswlib index."""

    PARTS: tuple[str, ...] = ("embed",)

    @classmethod
    def part_specs(cls, config, store=None) -> list[PartSpec]:
        """The Part protocol's specs (shm/parts.py): the log's control segment for
        ``config.embedding_dim`` (its chunks are made as it grows)."""
        el = E.EmbedLayout.for_dim(config.embedding_dim)
        log_id = L.make_log_id()
        return [PartSpec("embed", L.KIND_EMBED, el.total_bytes, el.params, lambda seg: el.init(seg, log_id))]

    @classmethod
    def attach(cls, system: System) -> VectorTier:
        """A view of the embedding log (the Part protocol); it builds no index unless searched."""
        return cls(system, system.config.get("storage_path", ""), space=system.config.get("vector_space", "cosine"))

    def __init__(
        self,
        system: System,
        path: str,
        space: str = "cosine",
        mode: int = 0o600,
        recover=None,
        index: IndexParams = IndexParams(),
    ):
        if space not in SPACES:
            raise ConfigError(f"vector space {space!r} must be one of {SPACES}")
        self.system = system
        self.space = space
        self.params = index
        self.mode = mode
        seg = system.parts["embed"]
        self.layout = E.EmbedLayout.from_segment(seg)
        self.ctl = seg.region(self.layout.ctl_offset, E.CTL_WORDS * 8, np.int64)
        self.ctl_addr = seg.address + self.layout.ctl_offset
        # A dead appender's stripes are replayed (``recover``) before its log lock is taken over.
        self._log_lock = OwnedLock(
            system, self.ctl, E.LOCK_IDX, "the embedding log", (lambda _dead: recover()) if recover else None
        )
        self.dim = int(self.ctl[E.DIM_IDX])
        if int(self.ctl[E.RECORD_BYTES_IDX]) != E.record_bytes(self.dim):
            raise self._corrupt(f"records of {int(self.ctl[E.RECORD_BYTES_IDX])} bytes for dimension {self.dim}")
        self.log_id = int(self.ctl[E.LOG_ID_IDX])
        self.dir = os.path.join(path, "l2")
        self._chunk_lay = self.layout.chunk_layout()  # the same for every chunk: built once
        self._headers_offset = self._chunk_lay.offset("headers")
        self._vectors_offset = self._chunk_lay.offset("vectors")
        self.vec_bytes = 4 * self.dim
        self._words_offset = self._chunk_lay.offset("chunk")
        self._keys_offset = self._chunk_lay.offset("keys")
        self._keys_end = self._keys_offset + self.layout.chunk_key_bytes
        if (RECORD_HDR_BYTES, FIRST_ID_WORD, KEY_BUMP_WORD) != (E.RECORD_HDR_BYTES, E.FIRST_ID_IDX, E.KEY_BUMP_IDX):
            raise TierError("the embedding log's kernels and layout disagree on the record header or chunk words")
        self._log_write: Any = None  # the kernel's compiled entry, bound on the first append
        self._chunks: list[Segment] = []
        self._chunk_words: list[np.ndarray] = []  # each chunk's FIRST_ID and KEY_BUMP words
        self._mapped_below = 0  # records below this id lie in chunks already mapped
        self._first_ids: list[int] = []
        self._chunk_arrays = (np.zeros(0, np.int64),) * 3  # bases, sizes, first ids (``_note_chunk``)
        self._log_keys: Any = None  # the kernel's compiled entry, bound on the first search
        # ``_lock``: the writer state and the chunk mappings; ``_ilock``: the index (taken first when
        # both are held: a sync reads records, a write never touches the index).
        self._lock = threading.RLock()
        self._ilock = threading.RLock()
        self.window = DEFAULT_WINDOW
        self.durable: Callable[[], None] | None = None  # L3 holds every vector appended so far (journal flush)
        # key bytes -> its latest vector's bytes in L3, or None
        self.vector_source: Callable[[bytes], bytes | None] | None = None
        self._punched: dict[int, int] = {}  # chunk number -> end of its vector pages released here
        # Writer state: the latest record id of each key, synced from the log, and the context of
        # the one-call put (kernels/embedput.py), which holds the id the map is synced up to.
        self._lctx = np.zeros(PL.LC_WORDS, np.int64)
        self._lctx_addr = int(self._lctx.ctypes.data)
        self._put_fused: Any = None  # the kernel's compiled entry, bound on the first put
        self.one_call_puts = 0  # puts this process made through it (the rest took the general path)
        for idx, value in (
            (PL.LC_COUNT_ADDR, self.ctl_addr + E.COUNT_IDX * 8),
            (PL.LC_LOCK_ADDR, self.ctl_addr + E.LOCK_IDX * 8),
            (PL.LC_NCHUNKS_ADDR, self.ctl_addr + E.NCHUNKS_IDX * 8),
            (PL.LC_OWNER, system.owner),
            (PL.LC_CHUNK_NO, -1),
            (PL.LC_WORDS_OFF, self._words_offset),
            (PL.LC_KEYS_OFF, self._keys_offset),
            (PL.LC_KEYS_END, self._keys_end),
            (PL.LC_HEADERS_OFF, self._headers_offset),
            (PL.LC_VECTORS_OFF, self._vectors_offset),
            (PL.LC_VEC_BYTES, self.vec_bytes),
            (PL.LC_CHUNK_RECORDS, self.layout.chunk_records),
        ):
            self._lctx[idx] = value
        self._latest = LatestIds(context=self._lctx)
        # Search state.
        self.index: Any = None  # an hnswlib.Index once this process searches
        self.on_progress: Callable[[], None] | None = None  # between the batches of a long sync (its beat)
        self._ef_set = -1  # the ef the index was last given
        self._indexed_upto = 0
        self._saved_upto = -1
        self._ns_ids: dict[bytes, int] = {}
        self._labels_ns = np.zeros(0, np.int32)
        self._live = np.zeros(0, np.bool_)
        self._ns_live: dict[int, int] = {}  # live vectors per namespace number, kept incrementally
        self._total_live = 0

    # ------------------------------------------------------------------------------- the log
    @property
    def _latest_upto(self) -> int:
        """The latest-id map holds every record below this id."""
        return int(self._lctx[PL.LC_LATEST_UPTO])

    @_latest_upto.setter
    def _latest_upto(self, rid: int) -> None:
        self._lctx[PL.LC_LATEST_UPTO] = rid

    @property
    def count(self) -> int:
        """Records committed, checked against what the published chunks can hold: a shared word
        is never trusted as a loop bound."""
        count = acquire_load(self.ctl, E.COUNT_IDX)
        nchunks = acquire_load(self.ctl, E.NCHUNKS_IDX)
        if not 0 <= nchunks <= MAX_CHUNKS or not 0 <= count <= nchunks * self.layout.chunk_records:
            raise self._corrupt(f"{count} records in {nchunks} chunks")
        return count

    def _corrupt(self, what: str) -> CorruptSegment:
        return CorruptSegment(f"system {self.system.name!r}: the embedding log is damaged ({what})")

    def _chunk(self, i: int) -> Segment:
        lay = self._chunk_lay
        while len(self._chunks) <= i:
            seg = self.system.attach_segment(f"embed.{len(self._chunks)}", L.KIND_EMBED_CHUNK)
            if seg.size != lay.total_bytes:
                seg.close()
                raise TierError(f"embedding chunk {seg.shm_name!r} has an unexpected size")
            first = int(seg.region(lay.offset("chunk"), 64, np.int64)[E.FIRST_ID_IDX])
            if first < 0 or (self._first_ids and first <= self._first_ids[-1]):
                seg.close()
                raise self._corrupt(f"chunk {len(self._chunks)} starts at record {first}")
            self._note_chunk(seg, seg.region(lay.offset("chunk"), CHUNK_HEAD_BYTES, np.int64), first)
        return self._chunks[i]

    def _note_chunk(self, seg: Segment, cw: np.ndarray, first: int) -> None:
        """Keep chunk ``seg`` (its words ``cw``, its first record ``first``) mapped, and the arrays
        :func:`log_keys` reads chunks from."""
        self._chunks.append(seg)
        self._chunk_words.append(cw)
        self._first_ids.append(first)
        self._lctx[PL.LC_CHUNK_ADDR] = seg.address  # the one-call put appends to the last mapped
        self._lctx[PL.LC_CHUNK_SIZE] = seg.size
        self._lctx[PL.LC_CHUNK_NO] = len(self._chunks) - 1
        self._chunk_arrays = (
            np.array([c.address for c in self._chunks], np.int64),
            np.array([c.size for c in self._chunks], np.int64),
            np.array(self._first_ids, np.int64),
        )

    @property
    def released(self) -> int:
        """Records below this id have given their vectors back (:meth:`release`); checked
        against COUNT, as every shared word is."""
        released = acquire_load(self.ctl, E.RELEASED_IDX)
        if not 0 <= released <= self.count:
            raise self._corrupt(f"vectors released below record {released}")
        return released

    def _locate(self, rid: int) -> tuple[Segment, int]:
        """(chunk, index of record ``rid`` in it) of record ``rid`` (< count)."""
        if rid >= self._mapped_below:
            with self._lock:
                # Records below COUNT lie in chunks below NCHUNKS (a chunk is published before
                # any record in it is committed): read COUNT first, then map every published chunk.
                count = self.count
                self._chunk(acquire_load(self.ctl, E.NCHUNKS_IDX) - 1)
                self._mapped_below = count
        i = bisect.bisect_right(self._first_ids, rid) - 1
        within = rid - self._first_ids[i] if i >= 0 else -1
        if not 0 <= within < self.layout.chunk_records:
            raise self._corrupt(f"record {rid} lies in no chunk")
        return self._chunks[i], within

    def _record(self, rid: int):
        """(kind, key bytes, superseded id or -1, chunk, index in it) of record ``rid``."""
        seg, within = self._locate(rid)
        w0, koff, prev1 = _REC_HEAD.unpack_from(seg.buf.data, self._headers_offset + within * E.RECORD_HDR_BYTES)
        kind, klen = w0 & 0xFFFFFFFF, (w0 >> 32) & 0xFFFFFFFF
        if kind not in (E.REC_PUT, E.REC_DELETE) or not 0 <= koff <= seg.size - klen or not 0 <= prev1 <= rid:
            raise self._corrupt(f"record {rid} is impossible")
        return kind, bytes(seg.buf[koff : koff + klen]), prev1 - 1, seg, within

    def _vector(self, seg: Segment, within: int) -> np.ndarray:
        """A view of the vector of record ``within`` of chunk ``seg`` (valid until released)."""
        off = self._vectors_offset + within * self.vec_bytes
        return seg.buf[off : off + self.vec_bytes].view(np.float32)

    def vector(self, rid: int) -> np.ndarray | None:
        """Record ``rid``'s vector, a read-only copy: from the log, or from L3 once released
        (None if L3 no longer holds the key's embedding)."""
        kind, key, _prev, seg, within = self._record(rid)
        if kind != E.REC_PUT:
            return None
        if rid >= self.released:
            v = self._vector(seg, within).copy()
            if rid >= self.released:  # still ours after the copy: no release overlapped it
                v.flags.writeable = False
                return v
        return self._from_l3(key)

    def _from_l3(self, key: bytes) -> np.ndarray | None:
        if self.vector_source is None:
            raise TierError("the embedding log released this vector and no L3 is attached to read it from")
        raw = self.vector_source(key)
        if raw is None:
            return None
        v = np.frombuffer(bytes(raw), np.float32)
        if len(v) != self.dim:
            raise TierError(f"stored embedding of {key!r} has {len(v)} components, expected {self.dim}")
        return v

    def _sync_latest(self, count: int | None = None) -> None:
        count = self.count if count is None else count
        if count <= self._latest_upto:
            return
        for rid in range(self._latest_upto, count):
            kind, key, _prev, _seg, _within = self._record(rid)
            if kind == E.REC_PUT:
                self._latest.put(key, rid)
            else:
                self._latest.pop(key)
        self._latest_upto = count

    def latest_id(self, kb: bytes) -> int:
        """The id of ``kb``'s current embedding, or -1."""
        with self._lock:
            self._sync_latest()
            return self._latest.get(kb)

    def put_with(
        self, l1_context: int, h: int, kb: bytes, vb: bytes, expiry: int, data_expiry: int, flags: int, emb
    ) -> int:
        """The common case of a put with an embedding in one kernel call (kernels/embedput.py): L1
        and the journal (``l1_context``: the L1 table's kernel context, ``h`` its hash of ``kb``),
        then the log's PUT record of ``kb`` with vector bytes ``emb``. Returns OK when both are
        stored; otherwise nothing is stored, and the status says why (SLOW_PATH, BUSY,
        JOURNAL_FULL, ...): the caller takes the general path (:meth:`reserve`)."""
        if not self._lock.acquire(False):
            return PL.SLOW_PATH
        try:
            if not self._latest.room():
                return PL.SLOW_PATH  # the general path grows the map
            if self._put_fused is None:
                types = (
                    JIT.INT,
                    JIT.INT,
                    JIT.BYTES,
                    JIT.BYTES,
                    JIT.INT,
                    JIT.INT,
                    JIT.INT,
                    JIT.BYTES,
                    JIT.INT,
                    JIT.INT,
                    JIT.INT,
                )
                self._put_fused = JIT.entry_point(P.put_with_embedding, *types)
            klo, khi = _key_hash(kb)
            st = self._put_fused(l1_context, h, kb, vb, expiry, data_expiry, flags, emb, self._lctx_addr, klo, khi)
            if st < 0:
                return st
            self._latest.counted(st - 1)
            self.one_call_puts += 1
            return OK
        finally:
            self._lock.release()

    def reserve(self, klen: int) -> _Reservation:
        """Hold the log's append lock with room for one record whose key is ``klen`` bytes (a new
        chunk is made first if needed: ``CapacityError`` when shared memory is full, before the
        caller has written anything): ``with tier.reserve(n) as write: write(kb, vec) -> record
        id``. The caller holds the key's L1 stripe, so per key the log's order is the journal's."""
        return _Reservation(self, klen)

    def _write(self, seg: Segment, cw: np.ndarray, rid: int, kb: bytes, vec: np.ndarray | None, raw=None) -> int:
        """Write record ``rid`` into ``seg`` (``_writable_chunk`` checked the room) and publish it
        (``raw``: ``vec.tobytes()``, if the caller has it)."""
        h = _key_hash(kb)
        prev_id = self._latest.get(kb, h)
        if vec is None and prev_id < 0:
            return -1
        if self._log_write is None:
            self._log_write = JIT.entry_point(KE.log_write, *([JIT.INT] * 12), JIT.BYTES, JIT.BYTES)
        within = rid - int(cw[E.FIRST_ID_IDX])
        st = self._log_write(
            seg.address,
            seg.size,
            self._words_offset,
            self._keys_offset,
            self._keys_end,
            self._headers_offset + within * E.RECORD_HDR_BYTES,
            self._vectors_offset + within * self.vec_bytes,
            self.vec_bytes,
            self.ctl_addr + E.COUNT_IDX * 8,
            rid,
            E.REC_PUT if vec is not None else E.REC_DELETE,
            prev_id,
            kb,
            (vec.tobytes() if raw is None else raw) if vec is not None else b"",
        )
        if st != OK:
            raise self._corrupt(f"chunk of record {rid}: its key area or record is out of bounds")
        if self._latest_upto == rid:  # our own record: no need to read it back
            if vec is not None:
                self._latest.put(kb, rid, h)
            else:
                self._latest.pop(kb, h)
            self._latest_upto = rid + 1
        return rid

    def append(self, kb: bytes, vec: np.ndarray | None) -> int:
        """Append a PUT (``vec``) or DELETE (None) record for ``kb``; returns its id (-1 if a
        delete found no embedding). The caller holds the key's L1 stripe."""
        with self.reserve(len(kb)) as write:
            return write(kb, vec)

    def _writable_chunk(self, rid: int, klen: int) -> tuple[Segment, np.ndarray]:
        """The chunk to append record ``rid`` to and its words, creating the next chunk when the
        last is full. A key offset outside the chunk's key area is damage, not room."""
        lay = self._chunk_lay
        nchunks = int(self.ctl[E.NCHUNKS_IDX])
        if nchunks:
            seg = self._chunks[nchunks - 1] if len(self._chunks) >= nchunks else self._chunk(nchunks - 1)
            cw = self._chunk_words[nchunks - 1]
            used = rid - int(cw[E.FIRST_ID_IDX])
            bump = int(cw[E.KEY_BUMP_IDX])
            if not self._keys_offset <= bump <= self._keys_end:
                raise self._corrupt(f"chunk {nchunks - 1}'s key area ends at {bump}")
            if 0 <= used < self.layout.chunk_records and bump + klen <= self._keys_end:
                return seg, cw
        seg = self.system.create_segment(f"embed.{nchunks}", L.KIND_EMBED_CHUNK, lay.total_bytes, [self.dim])
        cw = seg.region(lay.offset("chunk"), CHUNK_HEAD_BYTES, np.int64)
        KW.store_word(cw, E.FIRST_ID_IDX, rid)
        KW.store_word(cw, E.KEY_BUMP_IDX, lay.offset("keys"))
        if len(self._chunks) == nchunks:
            self._note_chunk(seg, cw, rid)
        KW.word_store(self.ctl_addr + E.NCHUNKS_IDX * 8, nchunks + 1)
        return seg, cw

    # ------------------------------------------------------------------------------- the index
    def _index_file(self) -> str:
        return os.path.join(self.dir, f"{self.system.name}-{self.log_id:016x}.hnsw")

    def _file_lock(self, exclusive: bool):
        """The saved index's file lock: shared to load the index and its metadata as one pair,
        exclusive to replace them and raise RELEASED (the kernel drops it if we die)."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        return _FileLock(self._index_file() + ".lock", exclusive)

    def _saved_meta(self) -> dict | None:
        """The saved index's metadata if it is this log's and built as this tier builds, else None."""
        try:
            with open(self._index_file() + ".json") as f:
                meta = json.load(f)
            # Indexes saved before M and ef_construction were settings used the defaults.
            built = (meta.get("M", DEFAULT_M), meta.get("ef_construction", EF_CONSTRUCTION))
            if (
                meta.get("log_id") == self.log_id
                and meta.get("space") == self.space
                and built == (self.params.m, self.params.ef_construction)
                and isinstance(meta.get("upto"), int)
                and 0 <= meta["upto"] <= self.count
            ):
                return meta
        except (OSError, ValueError):
            pass
        return None

    def _ensure_index(self) -> None:
        if self.index is not None:
            return
        import hnswlib  # here, not at import: a process that never searches never loads it

        index, upto = None, 0
        with self._file_lock(exclusive=False):
            meta = self._saved_meta()
            if meta is not None and os.path.exists(self._index_file()):
                try:
                    index = hnswlib.Index(space=self.space, dim=self.dim)
                    index.load_index(self._index_file(), max_elements=_room(meta["upto"]))
                    upto = meta["upto"]
                except (OSError, RuntimeError, ValueError):
                    index, upto = None, 0
        if index is None:
            index = hnswlib.Index(space=self.space, dim=self.dim)
            room, built = _room(self.count), self.params
            index.init_index(max_elements=room, ef_construction=built.ef_construction, M=built.m)
        index.set_num_threads(max(1, (os.cpu_count() or 1)))
        self.index = index
        self._ef_set = -1
        self._saved_upto = upto
        # Namespaces and liveness of the records the loaded index covers (no vector work).
        self._grow(max(1024, self.count))
        for rid in range(upto):
            self._apply_meta(rid)
        self._indexed_upto = upto
        released = self.released
        if upto < released:
            self._index_from_l3(upto, released)

    def _index_from_l3(self, start: int, end: int) -> None:
        """Index records ``[start, end)``, whose vectors the log has released, from L3: the saved
        index that covered them is missing or older (deleted, or saved by an older version)."""
        self._grow(end)
        deleted = [prev for rid in range(start, end) if (prev := self._apply_meta(rid)[1]) >= 0]
        live = [rid for rid in range(start, end) if self._live[rid]]
        for lo in range(0, len(live), SYNC_BATCH):
            ids, vecs = [], []
            for rid in live[lo : lo + SYNC_BATCH]:
                vec = self._from_l3(self.key_of(rid))
                if vec is None:  # expired or deleted in L3 meanwhile: the tail's record says so
                    continue
                ids.append(rid)
                vecs.append(vec)
            if ids:
                self._add(ids, np.stack(vecs))
        self._mark_deleted(deleted)
        self._indexed_upto = end

    def _add(self, ids: list[int], block: np.ndarray) -> None:
        index = self.index
        need = index.get_current_count() + len(ids)
        if need > index.get_max_elements():
            index.resize_index(max(need, index.get_max_elements() * 3 // 2))
        try:
            index.add_items(block, np.asarray(ids, np.uint64))
        except RuntimeError as exc:
            raise TierError(f"hnswlib refused {len(ids)} vectors: {exc}") from exc

    def _mark_deleted(self, rids: list[int]) -> None:
        for rid in rids:
            try:
                self.index.mark_deleted(rid)
            except RuntimeError:
                pass  # deleted before it was indexed here, or already marked

    def drop_index(self) -> None:
        """Forget this process's index (another process serves the searches now)."""
        with self._ilock:
            self.index = None
            self._indexed_upto = 0
            self._saved_upto = -1
            self._ns_ids.clear()
            self._ns_live.clear()
            self._total_live = 0
            self._labels_ns = np.zeros(0, np.int32)
            self._live = np.zeros(0, np.bool_)

    def _grow(self, n: int) -> None:
        if n > len(self._labels_ns):
            size = max(n, 2 * len(self._labels_ns))
            self._labels_ns = np.concatenate([self._labels_ns, np.full(size - len(self._labels_ns), -1, np.int32)])
            self._live = np.concatenate([self._live, np.zeros(size - len(self._live), np.bool_)])

    def _apply_meta(self, rid: int):
        kind, key, prev, seg, within = self._record(rid)
        if prev >= 0 and self._live[prev]:
            self._live[prev] = False
            self._ns_live[int(self._labels_ns[prev])] -= 1
            self._total_live -= 1
        if kind == E.REC_PUT:
            ns = key.split(b"\0", 1)[0]
            nsid = self._ns_ids.setdefault(ns, len(self._ns_ids))
            self._labels_ns[rid] = nsid
            self._live[rid] = True
            self._ns_live[nsid] = self._ns_live.get(nsid, 0) + 1
            self._total_live += 1
        return kind, prev, seg, within

    def sync(self, beat=None) -> int:
        """Index the records appended since the last call; returns how many. ``beat()`` is called
        between batches of :data:`SYNC_BATCH` (a serving process shows it is alive while it builds).
        Then, past :attr:`window` records beyond the last release, saves and :meth:`release` s."""
        with self._ilock:
            self._ensure_index()
            start = self._indexed_upto
            for _ in range(3):
                try:
                    self._sync_tail(beat or self.on_progress)
                    break
                except _Released:
                    # Another process released vectors this index had not read yet: the saved
                    # index covers them now. Load it (the index built so far is dropped).
                    self.drop_index()
                    self._ensure_index()
            else:
                raise TierError("the embedding log kept releasing vectors before this process could index them")
            if self.window and self._indexed_upto - self.released >= self.window:
                self.release()
            return max(0, self._indexed_upto - start)

    def _sync_tail(self, beat) -> None:
        count = self.count
        start = self._indexed_upto
        if count <= start:
            return
        if self.released > start:
            raise _Released
        self._grow(count)
        # In batches: one stack of every new vector at once would double the peak memory.
        for lo in range(start, count, SYNC_BATCH):
            ids, vecs, deleted = [], [], []
            for rid in range(lo, min(count, lo + SYNC_BATCH)):
                kind, prev, seg, within = self._apply_meta(rid)
                if prev >= 0:
                    deleted.append(prev)
                if kind == E.REC_PUT:
                    ids.append(rid)
                    vecs.append(self._vector(seg, within))
            block = np.stack(vecs) if vecs else None  # the copy: checked against RELEASED next
            if self.released > lo:
                raise _Released  # a release overlapped the copy: some rows may be holes' zeros
            if block is not None:  # ids and vecs grow together
                self._add(ids, block)
            if beat is not None:
                beat()
            self._mark_deleted(deleted)
            self._indexed_upto = min(count, lo + SYNC_BATCH)

    def search_keys(self, namespace: bytes | None, queries, top_k: int, ef: int | None, allow=None, single=False):
        """:meth:`_found` with each hit as ``(key bytes, distance)``: ``namespace \\0 key``."""
        found = self._found(namespace, queries, top_k, ef, allow, single)
        keys = self.keys_of([rid for labels, _ in found for rid in labels])  # one kernel call for all
        out, at = [], 0
        for labels, dists in found:
            out.append(list(zip(keys[at : at + len(labels)], dists, strict=True)))
            at += len(labels)
        return out

    def hits(self, namespace: bytes | None, queries, top_k: int, ef: int | None, allow=None, single=False):
        """:meth:`_found`'s answer as :class:`Hit` lists (values None): built in one C call a
        query by the compiled extension (``nt_memory._fastpath.hits``), else from
        :meth:`search_keys`."""
        if fast is None:
            return [hits_from_keys(found) for found in self.search_keys(namespace, queries, top_k, ef, allow, single)]
        out = []
        per_chunk, base, size = self.layout.chunk_records, self._headers_offset, E.RECORD_HDR_BYTES
        found_all = self._found(namespace, queries, top_k, ef, allow, single, arrays=True)
        if self._indexed_upto > self._mapped_below:  # every label is below it: their chunks mapped
            self._locate(self._indexed_upto - 1)
        for labels, dists in found_all:
            found = fast.hits(cabi.LOG_KEYS.address, Hit, labels, dists, *self._chunk_arrays, per_chunk, base, size)
            if isinstance(found, int):
                raise self._corrupt(f"a record among {labels[:8].tolist()} is impossible for a hit")
            out.append(found)
        return out

    def record_filter(self, prefix: bytes = b"", accept=None):
        """A record-id predicate for a search (``allow``): records whose key (after the namespace)
        starts with ``prefix`` and, with ``accept``, that ``accept(namespace bytes, key bytes)``
        is true for. Each record's answer is kept: hnswlib asks again for nodes it revisits."""
        key_of = self.key_of
        seen: dict[int, bool] = {}

        def allow(rid: int) -> bool:
            ok = seen.get(rid)
            if ok is None:
                ns_b, key_b = key_of(rid).split(b"\0", 1)
                ok = key_b.startswith(prefix) and (accept is None or bool(accept(ns_b, key_b)))
                seen[rid] = ok
            return ok

        return allow

    def _found(self, namespace, queries, top_k, ef, allow, single, arrays=False) -> list[tuple]:
        """The nearest live vectors to each row of ``queries`` (2-D; one vector with ``single``),
        nearest first, as (record ids, distances) per query: lists, or with ``arrays`` hnswlib's
        own uint64 and float32 arrays. Only ``namespace``'s (None: every one) and, with ``allow``,
        only records ``allow(record id)`` accepts."""
        check_search_args(top_k, ef)
        qs = self.queries(queries, single)
        with self._ilock:
            # One load of COUNT decides whether to sync (which checks it in full): a search runs
            # cold, where every extra call into compiled code costs microseconds of misses.
            if self.index is None or acquire_load(self.ctl, E.COUNT_IDX) != self._indexed_upto:
                self.sync()
            total = self._total_live
            flt: Callable[[int], bool] | None = None
            k = min(top_k, total)
            if namespace is not None:
                nsid = self._ns_ids.get(namespace)
                pool = self._ns_live.get(nsid, 0) if nsid is not None else 0
                k = min(top_k, pool)
                if 0 < pool < total:
                    # hnswlib's filter: visited nodes of other namespaces are walked through but
                    # never returned, so ``ef`` means what it says (no over-fetching).
                    labels_ns, want = self._labels_ns, nsid

                    def flt(label, labels_ns=labels_ns, want=want):
                        return labels_ns[label] == want

            if allow is not None:
                inner = flt
                flt = allow if inner is None else (lambda label: inner(label) and allow(label))
            if k == 0:
                return [(_NO_LABELS, _NO_DISTS) if arrays else ([], []) for _ in qs]
            if flt is not None:
                return [self._knn(q, k, ef, flt, arrays) for q in qs]
            return self._knn_many(qs, k, ef, arrays)

    def queries(self, queries, single: bool) -> list[np.ndarray]:
        """The query vectors of a search, validated (one vector with ``single``, else a block)."""
        if single:
            return [validate_embedding(queries, self.dim)]
        return list(validate_embeddings(queries, self.dim))

    def _set_ef(self, ef: int | None, k: int) -> None:
        # hnswlib needs ef >= k: a smaller ef is raised to k, and only then.
        want = max(self.params.ef if ef is None else ef, k)
        if want != self._ef_set:
            self.index.set_ef(want)
            self._ef_set = want

    def _knn_many(self, qs: list[np.ndarray], k: int, ef: int | None, arrays=False) -> list[tuple]:
        """Unfiltered queries, in one hnswlib call (its threads, one per core, for many)."""
        self._set_ef(ef, k)
        try:
            if len(qs) == 1:
                labels, dists = self.index.knn_query(qs[0], k=k, num_threads=1)
            else:
                labels, dists = self.index.knn_query(np.stack(qs), k=k, num_threads=-1)
        except RuntimeError:
            return [self._knn(q, k, ef, None, arrays) for q in qs]  # fewer reachable than asked: one by one
        if arrays:
            return list(zip(labels, dists, strict=True))
        return list(zip(labels.tolist(), dists.tolist(), strict=True))

    def _knn(self, q: np.ndarray, k: int, ef: int | None, flt, arrays=False) -> tuple:
        if k <= 0:
            return (_NO_LABELS, _NO_DISTS) if arrays else ([], [])
        self._set_ef(ef, k)
        while True:
            try:
                labels, dists = self.index.knn_query(q, k=k, num_threads=1, filter=flt)
                break
            except RuntimeError:
                if k == 1:
                    return (_NO_LABELS, _NO_DISTS) if arrays else ([], [])
                k = max(1, k // 2)  # fewer reachable than asked (heavy filtering): settle
        return (labels[0], dists[0]) if arrays else (labels[0].tolist(), dists[0].tolist())

    def key_of(self, rid: int) -> bytes:
        return self._record(rid)[1]

    def keys_of(self, rids) -> list[bytes]:
        """The keys of PUT records ``rids`` (a search's hits), copied out in one kernel call."""
        n = len(rids)
        if n == 0:
            return []
        if max(rids) >= self._mapped_below:
            self._locate(max(rids))  # maps every published chunk, or raises
        if self._log_keys is None:
            self._log_keys = JIT.entry_point(
                KE.log_keys,
                JIT.INT_ARRAY,
                JIT.INT_ARRAY,
                JIT.INT_ARRAY,
                *([JIT.INT] * 4),
                JIT.INT_ARRAY,
                JIT.U8_ARRAY,
                JIT.INT_ARRAY,
            )
        bases, sizes, firsts = self._chunk_arrays
        ids = np.asarray(rids, np.int64)
        ends = np.empty(n, np.int64)
        out = np.empty(64 * n, np.uint8)
        per_chunk, headers = self.layout.chunk_records, self._headers_offset
        args = (bases, sizes, firsts, len(bases), per_chunk, headers, E.RECORD_HDR_BYTES, ids)
        st = self._log_keys(*args, out, ends)
        if st == FULL:
            out = np.empty(int(ends[-1]), np.uint8)
            st = self._log_keys(*args, out, ends)
        if st != OK:
            raise self._corrupt(f"a record among {rids[:8]} is impossible for a hit")
        raw = out.tobytes()
        starts = [0, *ends[:-1].tolist()]
        return [raw[a:b] for a, b in zip(starts, ends.tolist(), strict=True)]

    def save(self) -> bool:
        """Save the index (and the log position it covers) if it grew since loaded or saved, and
        the saved one covers less. Under the file lock: a process's older index never replaces
        a newer one, which RELEASED may count on."""
        with self._ilock:
            if self.index is None or self._indexed_upto <= self._saved_upto:
                return False
            with self._file_lock(exclusive=True):
                return self._save_locked()

    def _save_locked(self) -> bool:
        meta = self._saved_meta()
        if meta is not None and meta["upto"] >= self._indexed_upto and os.path.exists(self._index_file()):
            self._saved_upto = self._indexed_upto
            return False
        path = self._index_file()
        tmp = f"{path}.{os.getpid()}.{secrets.token_hex(3)}"
        self.index.save_index(tmp)
        os.chmod(tmp, 0o600)  # hnswlib creates it with the umask's mode: keep it private
        fd = os.open(tmp + ".json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            meta = {"log_id": self.log_id, "upto": self._indexed_upto, "space": self.space, "dim": self.dim}
            json.dump(meta | {"M": self.params.m, "ef_construction": self.params.ef_construction}, f)
            f.flush()
            os.fsync(f.fileno())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # RELEASED may count on this file: on disk before it is named
        os.replace(tmp, path)
        os.replace(tmp + ".json", path + ".json")
        self._saved_upto = self._indexed_upto
        return True

    def release(self) -> int:
        """Give back the shared-memory pages of the vectors this index covers: save the index,
        make sure L3 holds every vector so far (``durable``), raise RELEASED to the saved position,
        then punch the vector pages below it out of the chunks (their headers and keys stay).
        Whoever needs those vectors later loads the saved index, or reads L3. Returns the new
        RELEASED (unchanged when L3 could not be made current)."""
        with self._ilock:
            if self.index is None:
                return self.released
            target = self._indexed_upto
            if self.durable is not None:
                try:
                    self.durable()
                except NtMemoryError:
                    return self.released  # the journal did not drain in time: next sync tries again
            with self._file_lock(exclusive=True):
                self._save_locked()
                released = self.released
                if target > released:
                    KW.word_store(self.ctl_addr + E.RELEASED_IDX * 8, target)
                    released = target
            self._punch(released)
            return released

    def _punch(self, below: int) -> None:
        """Release the vector pages of records below ``below`` in every mapped chunk."""
        n, vb = self.layout.chunk_records, self.vec_bytes
        for i, first in enumerate(self._first_ids):
            if first >= below:
                break
            upto = min(below - first, n)
            if upto == n:  # the whole region: the key area starts at the next page
                end = L.align_up(self._vectors_offset + n * vb, L.PAGE_BYTES)
            else:  # whole pages only: a page that also holds a kept vector stays
                end = self._vectors_offset + upto * vb // L.PAGE_BYTES * L.PAGE_BYTES
            done = self._punched.get(i, self._vectors_offset)
            if end > done:
                self._chunks[i].release_pages(done, end - done)
                self._punched[i] = end

    def stats(self) -> dict:
        return {
            "records": self.count,
            "chunks": int(self.ctl[E.NCHUNKS_IDX]),
            "dim": self.dim,
            "space": self.space,
            "indexed_here": self._indexed_upto,
            "vectors_released_below": self.released,
            "window": self.window,
            "live_here": self._total_live if self.index is not None else None,
            "shm_bytes": sum(c.size for c in self._chunks),  # mapped here (released pages included)
            "vector_bytes_in_shm": (self.count - self.released) * self.vec_bytes,
            "one_call_puts_here": self.one_call_puts,
        }

    def verify(self) -> list[str]:
        """The Part protocol's check: the control words (``count`` refuses impossible ones) and
        every chunk's header. Reads only. ``[]`` when sound."""
        try:
            self.count  # noqa: B018  # the property checks the control words
            for c in range(int(self.ctl[E.NCHUNKS_IDX])):
                self._chunk(c)
        except NtMemoryError as exc:
            return [str(exc)]
        return []

    def close(self) -> None:
        self._chunk_words.clear()
        for seg in self._chunks:
            seg.close()
        self._chunks.clear()
        self.index = None


class _Reservation:
    """:meth:`VectorTier.reserve`'s context (a class, not a generator: it is on every put with an
    embedding)."""

    __slots__ = ("tier", "klen", "seg", "cw", "rid")

    def __init__(self, tier: VectorTier, klen: int):
        self.tier, self.klen = tier, klen

    def __enter__(self):
        t = self.tier
        t._lock.acquire()
        try:
            t._log_lock.acquire()
            try:
                self.rid = t.count
                t._sync_latest(self.rid)
                self.seg, self.cw = t._writable_chunk(self.rid, self.klen)
            except BaseException:
                t._log_lock.release()
                raise
        except BaseException:
            t._lock.release()
            raise
        return self.write

    def write(self, kb: bytes, vec: np.ndarray | None, raw: bytes | None = None) -> int:
        return self.tier._write(self.seg, self.cw, self.rid, kb, vec, raw)

    def __exit__(self, *exc) -> None:
        self.tier._log_lock.release()
        self.tier._lock.release()


class _Released(Exception):
    """Vectors this process was about to read were released (``VectorTier.sync`` reloads)."""


class _FileLock:
    """``flock`` on a file beside the saved index, for the ``with`` block."""

    __slots__ = ("path", "exclusive", "fd")

    def __init__(self, path: str, exclusive: bool):
        self.path, self.exclusive, self.fd = path, exclusive, -1

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH)
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)  # closing drops the lock


def _room(n: int) -> int:
    """An index's capacity for ``n`` vectors and some growth (hnswlib allocates a lock per slot)."""
    return max(1024, n + n // 4)
