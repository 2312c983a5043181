"""L3: cold storage in one LMDB environment under ``storage_path``.

Named databases per kind: ``kv`` (values), ``trajectories``, ``patterns``, ``consensus``, ``meta``
(and ``embeddings`` for L2). Every process opens its own environment (never across fork); LMDB's
own lock file makes them safe together. The map grows when full instead of failing. Every error
from LMDB is raised as a :class:`TierError` with the original as its cause.

A ``kv`` record is ``flags (1) | data expiry (8, wall ns, 0 = never) | encoded value``, with flag
bit 0 set when the value is zlib-compressed (``enable_compression``; only when it saves >= 1/8).

The storage directory is created ``0700`` and LMDB's files ``0600``: what the agents of one user
store is not readable by another local user.

``meta`` holds the high-water marks that must survive reboots (:meth:`ColdStore.reserve`: fencing
numbers, proposal ids) and each journal's drain position (:meth:`ColdStore.apply_journal`).

``outbox`` and ``replica`` serve the cluster bridge (nt_memory/cluster/bridge.py): in a system
that joined a cluster, the transaction that changes a ``kv`` key also notes it in ``outbox``
(whichever process drains), so a change waits there, durably, until the bucket has it.
"""

from __future__ import annotations

import os
import struct
import threading
import time
import zlib
from collections.abc import Iterable, Iterator

import lmdb

from nt_memory.errors import ConfigError, TierError
from nt_memory.shm.forks import guard, keep_forever

DATABASES = ("kv", "trajectories", "patterns", "consensus", "meta", "embeddings", "outbox", "replica")
# Set in ``meta`` once a system joins a cluster (nt_memory/cluster): from then on every transaction
# that changes ``kv`` also notes the keys in ``outbox`` (key -> stamp), which the bridge publishes.
CLUSTER_KEY = b"cluster/bucket"
OUTBOX_SEQ_KEY = b"cluster/outbox-seq"
_KV_HEAD = struct.Struct("<BQ")
KV_HEAD_BYTES = _KV_HEAD.size
FLAG_COMPRESSED = 1
COMPRESS_MIN_BYTES = 512


def pack_kv(encoded: bytes | memoryview, data_expiry_ns: int, compress: bool) -> bytes:
    flags = 0
    if compress and len(encoded) >= COMPRESS_MIN_BYTES:
        packed = zlib.compress(encoded, 1)
        if len(packed) <= len(encoded) - len(encoded) // 8:
            encoded = packed
            flags |= FLAG_COMPRESSED
    return _KV_HEAD.pack(flags, data_expiry_ns) + encoded


def unpack_kv(raw) -> tuple[memoryview | bytes, int]:
    """(encoded value, data expiry) of a kv record; a view into ``raw`` when not compressed."""
    flags, expiry = _KV_HEAD.unpack_from(raw, 0)
    body: memoryview | bytes = memoryview(raw)[KV_HEAD_BYTES:]
    if flags & FLAG_COMPRESSED:
        try:
            body = zlib.decompress(body)
        except zlib.error as exc:
            raise TierError(f"a compressed L3 value is damaged: {exc}") from exc
    return body, expiry


_OPEN: dict[str, ColdStore] = {}
_OPEN_LOCK = threading.Lock()
_INHERITED: dict[str, int] = {}  # in a forked child: path -> the pid that opened it before the fork


class ColdStore:
    """The LMDB environment of one system. LMDB must not open one environment twice in a process
    (closing either would drop the other's locks), so :meth:`shared` hands out one instance per
    path per process, reference-counted; ``close()`` releases a reference."""

    @classmethod
    def shared(cls, path: str, **kwargs) -> ColdStore:
        path = os.path.abspath(path)
        if path in _INHERITED:
            raise TierError(
                f"storage_path={path!r} was opened in pid {_INHERITED[path]} before it forked this process: LMDB "
                "cannot open it again here (closing the inherited copy would drop the parent's readers); "
                "start agent processes with the spawn start method or exec"
            )
        with _OPEN_LOCK:
            store = _OPEN.get(path)
            if store is None or store.closed:
                store = _OPEN[path] = cls(path, **kwargs)
            store._refs += 1
            return store

    def __init__(self, path: str, *, map_bytes: int = 1 << 30, compression: bool = True, sync: bool = True):
        self.path = os.path.abspath(path)
        self.compression = compression
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"storage_path={self.path!r} cannot be created: {exc.strerror}") from exc
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise ConfigError(f"storage_path={self.path!r} is not writable by this process")
        try:
            self.env = lmdb.open(
                self.path,
                map_size=map_bytes,
                max_dbs=len(DATABASES) + 2,
                subdir=True,
                sync=sync,
                metasync=sync,
                readahead=False,
                max_readers=1024,
                lock=True,
                mode=0o600,
            )
            self.dbs = {name: self.env.open_db(name.encode()) for name in DATABASES}
        except lmdb.Error as exc:
            raise TierError(f"cannot open LMDB at {self.path!r}: {exc}") from exc
        self._resize_lock = threading.Lock()
        self._refs = 0
        self._pid = os.getpid()
        self.closed = False
        guard(self)

    def _forked(self) -> None:
        """In a forked child: closed and never freed (LMDB environments must not cross a fork, and
        closing this one here would clear the parent's reader slots)."""
        global _OPEN_LOCK
        self.closed = True
        keep_forever(self)
        _INHERITED[self.path] = self._pid
        _OPEN.clear()
        _OPEN_LOCK = threading.Lock()  # a parent thread may have held it at the fork

    # ------------------------------------------------------------------------------- writes
    def transact(self, fn):
        """Run ``fn(txn)`` in one write transaction and commit; grows the map and runs it again
        when the map is full (``fn`` must not act outside the transaction). Returns its result."""
        for _ in range(40):
            try:
                with self.env.begin(write=True) as txn:
                    return fn(txn)
            except lmdb.MapFullError:
                self._grow()
            except lmdb.MapResizedError:
                self._adopt_size()
            except lmdb.Error as exc:
                raise TierError(f"LMDB write to {self.path!r} failed: {exc}") from exc
        raise TierError(f"LMDB at {self.path!r} stayed full after growing the map")

    def _apply(self, txn, ops) -> None:
        for db, key, value in ops:
            if value is None:
                txn.delete(key, db=self.dbs[db])
            else:
                txn.put(key, value, db=self.dbs[db])

    def write(self, ops: Iterable[tuple[str, bytes, bytes | None]]) -> int:
        """Apply ``(db, key, value or None to delete)`` in order, in one transaction; grows the map
        and retries when it is full. Returns the number of operations."""
        ops = list(ops)

        def run(txn):
            self._apply(txn, ops)
            self._note_outbox(txn, [key for db, key, _ in ops if db == "kv"])

        self.transact(run)
        return len(ops)

    def _note_outbox(self, txn, keys: list[bytes]) -> None:
        """In a system that joined a cluster: note ``keys`` (changed in ``kv`` by this transaction)
        in ``outbox`` under a new stamp, for the bridge to publish."""
        if not keys or txn.get(CLUSTER_KEY, db=self.dbs["meta"]) is None:
            return
        raw = txn.get(OUTBOX_SEQ_KEY, db=self.dbs["meta"])
        stamp = (int.from_bytes(raw, "little") if raw else 0) + 1
        txn.put(OUTBOX_SEQ_KEY, stamp.to_bytes(8, "little"), db=self.dbs["meta"])
        value = stamp.to_bytes(8, "big")
        outbox = txn.cursor(self.dbs["outbox"])
        outbox.putmulti([(key, value) for key in keys])

    def apply_journal(self, journal_key: bytes, records, end: int) -> int:
        """Apply journal records ``[(position, key, packed kv value or None, embedding or None)]``
        (``Journal._records``: a None value deletes the key and its embedding) drained up to
        position ``end``, in one transaction that also stores ``end`` as the journal's drain
        position; records below the stored position are skipped. Any number of drainers may race
        (one stalled, one taking over): LMDB serialises their transactions, and each applies only
        what no earlier one did, in journal order. Runs of puts go to LMDB in one ``putmulti``
        per database (each database's order is the journal's). Returns the records applied."""
        kv_db, emb_db = self.dbs["kv"], self.dbs["embeddings"]

        def run(txn):
            raw = txn.get(journal_key, db=self.dbs["meta"])
            done = int.from_bytes(raw, "little") if raw else 0
            if end <= done:
                return 0
            kv, emb = txn.cursor(kv_db), txn.cursor(emb_db)
            kv_run: list = []
            emb_run: list = []
            n = 0
            for pos, key, value, vec in records:
                if pos < done:
                    continue
                n += 1
                if value is not None:
                    kv_run.append((key, value))
                    if vec is not None:
                        emb_run.append((key, vec))
                    continue
                _put_runs(kv, kv_run, emb, emb_run)
                txn.delete(key, db=kv_db)
                txn.delete(key, db=emb_db)
            _put_runs(kv, kv_run, emb, emb_run)
            txn.put(journal_key, end.to_bytes(8, "little"), db=self.dbs["meta"])
            self._note_outbox(txn, [key for pos, key, _, _ in records if pos >= done])
            return n

        return self.transact(run)

    def journal_position(self, journal_key: bytes) -> int:
        raw = self.get("meta", journal_key)
        return int.from_bytes(raw, "little") if raw else 0

    def reserve(self, key: bytes, need: int, block: int) -> int:
        """Raise the high-water mark ``key`` to at least ``need + block`` (durably) and return it.
        Whatever was issued below an earlier mark is below the new one too: after a reboot,
        numbering resumes above every mark ever returned."""

        def run(txn):
            raw = txn.get(key, db=self.dbs["meta"])
            mark = max(int.from_bytes(raw, "little") if raw else 0, need) + block
            txn.put(key, mark.to_bytes(8, "little"), db=self.dbs["meta"])
            return mark

        return self.transact(run)

    def high_water(self, key: bytes) -> int:
        raw = self.get("meta", key)
        return int.from_bytes(raw, "little") if raw else 0

    def update(self, db: str, key: bytes, fn) -> object:
        """Read-modify-write one record atomically across processes: ``fn(old bytes or None)``
        returns the new bytes (None deletes; ``...`` leaves it) and runs inside the write
        transaction. Returns what ``fn`` returned."""

        def run(txn):
            old = txn.get(key, db=self.dbs[db])
            new = fn(bytes(old) if old is not None else None)
            if new is None:
                txn.delete(key, db=self.dbs[db])
            elif new is not ...:
                txn.put(key, new, db=self.dbs[db])
            return new

        return self.transact(run)

    def _grow(self) -> None:
        with self._resize_lock:
            info = self.env.info()
            new = info["map_size"] * 2
            try:
                self.env.set_mapsize(new)
            except lmdb.Error as exc:
                raise TierError(f"cannot grow the LMDB map at {self.path!r} to {new:,} bytes: {exc}") from exc

    def _adopt_size(self) -> None:
        with self._resize_lock:
            self.env.set_mapsize(0)  # another process grew the map: adopt its size

    # -------------------------------------------------------------------------------- reads
    def get(self, db: str, key: bytes) -> bytes | None:
        for _ in range(3):
            try:
                with self.env.begin(db=self.dbs[db]) as txn:
                    return txn.get(key)
            except lmdb.MapResizedError:
                self._adopt_size()
            except lmdb.Error as exc:
                raise TierError(f"LMDB read from {self.path!r} failed: {exc}") from exc
        raise TierError(f"LMDB at {self.path!r} kept being resized during a read")

    def items(self, db: str, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Key/value pairs of ``db`` whose key starts with ``prefix`` (a snapshot, copied)."""
        try:
            with self.env.begin(db=self.dbs[db]) as txn:
                cur = txn.cursor()
                if not cur.set_range(prefix):
                    return
                for k, v in cur:
                    if not k.startswith(prefix):
                        break
                    yield bytes(k), bytes(v)
        except lmdb.Error as exc:
            raise TierError(f"LMDB scan of {self.path!r} failed: {exc}") from exc

    def live_keys(self, prefix: bytes = b"", now_ns: int | None = None, batch: int = 1024) -> Iterator[bytes]:
        """The kv keys starting with ``prefix`` whose data has not expired, in key order, without
        copying their values (a record's expiry is in its first bytes). Each batch of ``batch`` keys
        is read in its own short read transaction, so a slow consumer holds no snapshot open."""
        now = now_ns or time.time_ns()
        start, skip = prefix, None
        while True:
            keys: list[bytes] = []
            try:
                with self.env.begin(db=self.dbs["kv"], buffers=True) as txn:
                    cur = txn.cursor()
                    ok = cur.set_range(start)
                    while ok and len(keys) < batch:
                        k = bytes(cur.key())
                        if not k.startswith(prefix):
                            ok = False
                            break
                        if k != skip:
                            _flags, expiry = _KV_HEAD.unpack_from(cur.value(), 0)
                            if not expiry or expiry > now:
                                keys.append(k)
                        skip = k
                        ok = cur.next()
            except lmdb.Error as exc:
                raise TierError(f"LMDB scan of {self.path!r} failed: {exc}") from exc
            yield from keys
            if not ok or skip is None:
                return
            start = skip  # resume at the last key read (skipped: it was counted already)

    def count(self, db: str) -> int:
        with self.env.begin(db=self.dbs[db]) as txn:
            return txn.stat(self.dbs[db])["entries"]

    # --------------------------------------------------------------------------- kv helpers
    def kv_get(self, key: bytes, now_ns: int | None = None):
        """(encoded value, data expiry) for a live key, or None (absent or expired)."""
        raw = self.get("kv", key)
        if raw is None:
            return None
        body, expiry = unpack_kv(raw)
        if expiry and expiry <= (now_ns or time.time_ns()):
            return None
        return body, expiry

    def stats(self) -> dict:
        info = self.env.info()
        stat = self.env.stat()
        return {
            "path": self.path,
            "map_bytes": info["map_size"],
            "used_bytes": (info["last_pgno"] + 1) * stat["psize"],
            "kv_entries": self.count("kv"),
        }

    def sync(self) -> None:
        self.env.sync(True)

    def close(self) -> None:
        """Release one reference (see :meth:`shared`); the environment closes with the last."""
        with _OPEN_LOCK:
            if self.closed:
                return
            self._refs -= 1
            if self._refs > 0:
                return
            self.closed = True
            if _OPEN.get(self.path) is self:
                del _OPEN[self.path]
        self.env.close()


def required(store: ColdStore | None, what: str) -> ColdStore:
    """``store``, or the error an observer's view (the Part protocol's ``attach``, which takes no
    L3) raises when asked to do what needs one."""
    if store is None:
        raise TierError(f"{what} is an observer's view: it has no L3 store")
    return store


def _put_runs(kv, kv_run: list, emb, emb_run: list) -> None:
    """Write and empty the pending puts of each database (cursors of one write transaction)."""
    if kv_run:
        kv.putmulti(kv_run)
        kv_run.clear()
    if emb_run:
        emb.putmulti(emb_run)
        emb_run.clear()
