"""The write-behind journal: puts land here (shared memory) and a flusher drains them into LMDB.

A put that returned is in the journal, which survives the death of every process. One flusher at a
time drains it, in order, in batches of one LMDB transaction each. It holds the ring's consumer
lock (an owner word), so a flusher that dies is replaced by the next process that notices. Every
attached ``MemorySystem`` runs a flusher thread that is either draining or watching the flusher.
A drain re-applied after a crash (LMDB committed, HEAD not yet advanced) writes the same values in
the same order, so it is harmless.
"""

from __future__ import annotations

import struct
import threading
import time

import numpy as np

from nt_memory.errors import TierError
from nt_memory.kernels import status as S
from nt_memory.kernels._jit import BYTES, INT, entry_point
from nt_memory.kernels.ring import (
    RING_APPEND_BYTES_IDX,
    RING_APPENDS_IDX,
    RING_CAPACITY_IDX,
    RING_CONSUMER_LOCK_IDX,
    RING_HDR_BYTES,
    RING_HEAD_IDX,
    RING_LOCK_IDX,
    RING_TAIL_IDX,
    ring_recover,
    ring_set_head,
    ring_try_lock_consumer,
)
from nt_memory.kernels.table import (
    JOURNAL_DELETE,
    JOURNAL_PAYLOAD_FIXED,
    JOURNAL_PUT,
    JOURNAL_PUT_EMB,
    journal_find,
    journal_index,
)
from nt_memory.kernels.words import word_load
from nt_memory.shm.journal_layout import JournalLayout
from nt_memory.shm.system import System
from nt_memory.tiers.l3 import ColdStore, pack_kv

_PAYLOAD_HEAD = struct.Struct("<qII")
BATCH_RECORDS = 4096
BATCH_BYTES = 8 << 20


class Journal:
    """This process's view of the system's journal, and its flusher thread."""

    def __init__(self, system: System, ctx_addr: int, store: ColdStore, compression: bool):
        seg = system.parts["journal"]
        lay = JournalLayout.from_segment(seg)
        self.system = system
        self.store = store
        self.compression = compression
        self.ring = seg.region(lay.ring_offset, RING_HDR_BYTES, np.int64)
        self.data = seg.region(lay.data_offset, lay.capacity)
        self.ring_addr = seg.address + lay.ring_offset
        self.data_addr = seg.address + lay.data_offset
        self.capacity = lay.capacity
        self._ctx_addr = ctx_addr
        self._find = entry_point(journal_find, INT, BYTES)
        self._index = np.zeros((BATCH_RECORDS, 4), np.int64)
        self._drain_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.drained_records = 0
        self.drains = 0
        self.error: BaseException | None = None

    # -------------------------------------------------------------------------------- positions
    @property
    def head(self) -> int:
        return word_load(self.ring_addr + RING_HEAD_IDX * 8)

    @property
    def tail(self) -> int:
        return word_load(self.ring_addr + RING_TAIL_IDX * 8)

    def backlog_bytes(self) -> int:
        return self.tail - self.head

    # ------------------------------------------------------------------------------------ reads
    def _payload(self, pos: int):
        off = pos % self.capacity + 16
        expiry, klen, vlen = _PAYLOAD_HEAD.unpack_from(self.data, off)
        start = off + JOURNAL_PAYLOAD_FIXED
        return expiry, start, klen, vlen

    def find(self, kb: bytes):
        """The newest unflushed write of ``kb``: None (nothing pending: ask L3), ``("delete",)``, or
        ``("put", encoded value bytes, data expiry)``."""
        r = self._find(self._ctx_addr, kb)
        if r == S.NOT_FOUND:
            return None
        if r < 0:
            raise TierError(f"journal lookup failed: {S.NAMES.get(r, r)}")
        pos, deleted = r >> 1, r & 1
        if deleted:
            result = ("delete",)
        else:
            expiry, start, klen, vlen = self._payload(pos)
            result = ("put", self.data[start + klen : start + klen + vlen].tobytes(), expiry)
        # Valid only if the flusher has not consumed the record meanwhile (then L3 has it).
        return result if self.head <= pos else None

    # -------------------------------------------------------------------------------- flushing
    def is_flusher(self) -> bool:
        return int(self.ring[RING_CONSUMER_LOCK_IDX]) == self.system.owner

    def try_become_flusher(self) -> bool:
        if ring_try_lock_consumer(self.ring, self.system.owner):
            return True
        holder = int(self.ring[RING_CONSUMER_LOCK_IDX])
        if holder and not self.system.owner_alive(holder):
            ring_recover(self.ring, RING_CONSUMER_LOCK_IDX, holder)
            return bool(ring_try_lock_consumer(self.ring, self.system.owner))
        return False

    def recover_appender(self) -> int:
        """Free the append lock of a dead appender (its record was never published)."""
        holder = int(self.ring[RING_LOCK_IDX])
        if holder and not self.system.owner_alive(holder):
            return int(ring_recover(self.ring, RING_LOCK_IDX, holder))
        return 0

    def drain(self) -> int:
        """Move one batch of records into LMDB (caller is the flusher). Returns records moved."""
        with self._drain_lock:
            head = self.head
            tail = self.tail
            if head >= tail:
                return 0
            rows, end = journal_index(self.ring_addr, self.data_addr, self.capacity, head, tail, self._index)
            now = time.time_ns()
            ops = []
            size = 0
            for i in range(rows):
                pos, _off, n, kind = (int(x) for x in self._index[i])
                if kind in (JOURNAL_PUT, JOURNAL_DELETE, JOURNAL_PUT_EMB):
                    expiry, start, klen, vlen = self._payload(pos)
                    kb = self.data[start : start + klen].tobytes()
                    if kind == JOURNAL_DELETE or (expiry and expiry <= now):
                        ops.append(("kv", kb, None))
                        ops.append(("embeddings", kb, None))
                    else:
                        vb = self.data[start + klen : start + klen + vlen].tobytes()
                        ops.append(("kv", kb, pack_kv(vb, expiry, self.compression)))
                        if kind == JOURNAL_PUT_EMB:
                            end_emb = start + n - JOURNAL_PAYLOAD_FIXED
                            ops.append(("embeddings", kb, self.data[start + klen + vlen : end_emb].tobytes()))
                    size += n
                if size >= BATCH_BYTES:
                    end = int(self._index[i + 1, 0]) if i + 1 < rows else end
                    break
            if ops:
                self.store.write(ops)
            ring_set_head(self.ring, end)
            self.drained_records += len(ops)
            self.drains += 1
            return max(len(ops), 1)

    def flush(self, timeout: float = 30.0) -> None:
        """Return once everything appended before the call is in LMDB."""
        target = self.tail
        deadline = time.monotonic() + timeout
        pause = 0.0002
        while self.head < target:
            if self.is_flusher() or self.try_become_flusher():
                self.drain()
                continue
            if time.monotonic() > deadline:
                raise TierError(
                    f"flush: the flusher (owner {int(self.ring[RING_CONSUMER_LOCK_IDX]):#x}) did not reach position "
                    f"{target} within {timeout}s (at {self.head})"
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.005)

    def make_room(self, deadline: float) -> None:
        """Called when an append found the journal full: drain if we can, else wait for the flusher."""
        self.recover_appender()
        if self.is_flusher() or self.try_become_flusher():
            self.drain()
            return
        if time.monotonic() > deadline:
            raise TierError(
                f"the write-behind journal ({self.capacity:,} bytes) stayed full: the flusher is not keeping up"
            )
        time.sleep(0.0005)

    # ----------------------------------------------------------------------------- the thread
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"nt-memory-flusher-{self.system.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        idle = 0
        while not self._stop.is_set():
            try:
                if self.is_flusher() or self.try_become_flusher():
                    if self.drain():
                        idle = 0
                        self.error = None
                        continue
                    idle += 1
                    # Idle: back off from 0.25 ms to 8 ms between checks (a few wakeups a second
                    # at most while nothing is written).
                    self._stop.wait(min(0.00025 * (1 << min(idle, 5)), 0.008))
                else:
                    self._stop.wait(0.05)
            except Exception as exc:  # noqa: BLE001 - e.g. a full disk: nothing is lost (HEAD did
                # not move), so keep the error for stats() and retry after a pause.
                self.error = exc
                self._stop.wait(1.0)

    def stop(self) -> None:
        """Stop the thread; if we were the flusher, drain what is left and hand the role back."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        if self.is_flusher():
            while self.head < self.tail:
                self.drain()
            ring_recover(self.ring, RING_CONSUMER_LOCK_IDX, self.system.owner)

    def stats(self) -> dict:
        return {
            "capacity_bytes": self.capacity,
            "head": self.head,
            "tail": self.tail,
            "backlog_bytes": self.backlog_bytes(),
            "appends": int(self.ring[RING_APPENDS_IDX]),
            "append_bytes": int(self.ring[RING_APPEND_BYTES_IDX]),
            "flusher_owner": int(self.ring[RING_CONSUMER_LOCK_IDX]),
            "this_process_flushes": self.is_flusher(),
            "drained_records_here": self.drained_records,
            "capacity_ok": int(self.ring[RING_CAPACITY_IDX]) == self.capacity,
            "last_error": repr(self.error) if self.error else None,
        }
