"""The write-behind journal: puts land here (shared memory) and are drained, in order, into LMDB.

A put that returned is in the journal, which survives the death of every process. Draining is
safe for any number of processes at once: each batch is applied in one LMDB transaction that also
stores the journal's drain position, and skips what an earlier transaction applied
(``ColdStore.apply_journal``). So a drainer that stalls (SIGSTOP, a debugger) can be taken over at
any moment without a record being applied twice out of order, and the shared HEAD is only ever
raised (CAS) to what LMDB has committed.

Roles: one process at a time is the *flusher* (the ROLE word): its thread drains as soon as
records arrive (polling with a back-off from 0.25 to 8 ms). Every other open ``MemorySystem``
runs a watcher thread that checks every :data:`WATCH_S`; if the flusher is dead, or the journal
has had a backlog with neither the flusher's heartbeat nor HEAD moving for :data:`TAKEOVER_S`, it
takes the role. Hence the bound the README states: while any runnable process has the system
open, an acknowledged write-behind put reaches LMDB within TAKEOVER_S + WATCH_S plus one batch.

``durability="sync"`` puts, ``flush()`` and writers waiting for room drain themselves when nobody
else is draining (one transaction then commits every waiting writer's records: group commit), and
otherwise sleep on the journal's futex word until HEAD passes their record.
"""

from __future__ import annotations

import struct
import threading
import time
from typing import Any

import numpy as np

from nt_memory.errors import CorruptSegment, TierError, raise_status
from nt_memory.kernels import Compiled, lazy
from nt_memory.kernels import status as S
from nt_memory.kernels.layout.journal import JOURNAL_DELETE, JOURNAL_PAYLOAD_FIXED, JOURNAL_PUT, JOURNAL_PUT_EMB
from nt_memory.kernels.layout.ring import (
    RECORD_HDR_BYTES,
    RING_APPEND_BYTES_IDX,
    RING_APPENDS_IDX,
    RING_HDR_WORDS,
    RING_HEAD_IDX,
    RING_NOTIFY_IDX,
    RING_TAIL_IDX,
    RING_WAITERS_IDX,
)
from nt_memory.shm import layout as L
from nt_memory.shm.journal_layout import (
    DRAIN_LOCK_IDX,
    DRAINS_IDX,
    PROGRESS_IDX,
    ROLE_BEAT_IDX,
    ROLE_IDX,
    JournalLayout,
)
from nt_memory.shm.layout import make_log_id
from nt_memory.shm.owned import process_runnable
from nt_memory.shm.segment import acquire_load
from nt_memory.shm.system import PartSpec, System
from nt_memory.shm.wait import futex_wait, futex_wake
from nt_memory.tiers.l3 import ColdStore, pack_kv, required

KJ = lazy("journal", globals())
KO = lazy("lockword", globals())
KW = lazy("words", globals())

_PAYLOAD_HEAD = struct.Struct("<qII")
BATCH_RECORDS = 4096
BATCH_BYTES = 8 << 20
WATCH_S = 0.05  # how often the flusher repairs what dead writers left half-done
TAKEOVER_S = 0.25  # a backlog with no heartbeat and no progress for this long moves the role
STANDBY_S = TAKEOVER_S / 2  # how often a process that does not flush looks at the one that does
IDLE_MAX_S = 0.008
COALESCE_S = 0.002  # after a drain, records gather this long before the next (when nobody waits)
COALESCE_BYTES = 1 << 20
ROOM_TIMEOUT_S = 10.0


class Journal:
    """This process's view of the system's journal, and its flusher/watcher thread.

    ``recover`` is called to repair dead writers (the L1 tier's ``recover``: it also frees a dead
    writer's hold on the journal's append lock, after replaying its stripes)."""

    PARTS: tuple[str, ...] = ("journal",)
    _find: Any = Compiled("journal.journal_find_at", "INT", "INT", "INT", "BYTES")  # a key's last record, on an L3 read

    @classmethod
    def part_specs(cls, config, store=None) -> list[PartSpec]:
        """The Part protocol's specs (shm/parts.py): a ring of ``config.journal_bytes``."""
        jl = JournalLayout.for_size(config.journal_bytes, make_log_id())
        return [PartSpec("journal", L.KIND_JOURNAL, jl.total_bytes, jl.params, jl.init)]

    @classmethod
    def attach(cls, system: System) -> Journal:
        """An observer's view (the Part protocol): stats and verify; it never drains."""
        return cls(system, None, False, lambda: 0)

    def __init__(self, system: System, store: ColdStore | None, compression: bool, recover):
        seg = system.parts["journal"]
        lay = JournalLayout.from_segment(seg)
        self.system = system
        self.store = store
        self.compression = compression
        self.recover = recover
        self.ring = seg.region(lay.ring_offset, RING_HDR_WORDS * 8, np.int64)
        self.data = seg.region(lay.data_offset, lay.capacity)
        if store is not None:  # a member, which appends (an observer's view only reads)
            seg.populate(lay.data_offset, lay.capacity)
        self.ring_addr = seg.address + lay.ring_offset
        self.data_addr = seg.address + lay.data_offset
        self.capacity = lay.capacity
        self.journal_id = lay.journal_id
        self.position_key = f"journal/{lay.journal_id:016x}".encode()
        self._index = np.zeros((BATCH_RECORDS, 4), np.int64)
        self._view = self.data.data  # a memoryview of the record bytes
        self._drain_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.drained_records = 0
        self.drains = 0
        self.takeovers = 0
        self.standby_looks = 0  # times this process looked at another's flusher role
        self.error: BaseException | None = None

    @property
    def l3(self) -> ColdStore:
        """The L3 store; an observer's view (``attach``) has none."""
        return required(self.store, f"the journal of system {self.system.name!r}")

    # -------------------------------------------------------------------------------- positions
    def _word(self, idx: int) -> int:
        return acquire_load(self.ring, idx)

    @property
    def head(self) -> int:
        return self._word(RING_HEAD_IDX)

    @property
    def tail(self) -> int:
        return self._word(RING_TAIL_IDX)

    def backlog_bytes(self) -> int:
        return self.tail - self.head

    def drain_count(self) -> int:
        """How many batches have been drained into LMDB (a shared counter: a change means LMDB
        has new records, which is what the cluster bridge polls for)."""
        return self._word(DRAINS_IDX)

    # ------------------------------------------------------------------------------------ reads
    def _payload(self, off: int):
        """(data expiry, key start, key length, value length) of the payload at byte ``off``."""
        expiry, klen, vlen = _PAYLOAD_HEAD.unpack_from(self._view, off)
        return expiry, off + JOURNAL_PAYLOAD_FIXED, klen, vlen

    def find(self, kb: bytes):
        """The newest unflushed write of ``kb``: None (nothing pending: ask L3), ``("delete",)``, or
        ``("put", encoded value bytes, data expiry)``."""
        r = self._find(self.ring_addr, self.data_addr, self.capacity, kb)
        if r == S.NOT_FOUND:
            return None
        if r < 0:
            raise_status("CORRUPT", f"the journal of system {self.system.name!r}", "its positions are impossible")
        pos, deleted = r >> 1, r & 1
        result: tuple
        if deleted:
            result = ("delete",)
        else:
            expiry, start, klen, vlen = self._payload(pos % self.capacity + RECORD_HDR_BYTES)
            result = ("put", self.data[start + klen : start + klen + vlen].tobytes(), expiry)
        # Valid only if the flusher has not consumed the record meanwhile (then L3 has it).
        return result if self.head <= pos else None

    # -------------------------------------------------------------------------------- draining
    def _records(self, head: int, tail: int):
        """Copy the records of [head, tail) (at most one batch) out of the journal: returns
        ([(position, key, packed kv value or None to delete, embedding or None)], end position).
        A delete (or an expired put) removes the key's embedding too; a plain put leaves it."""
        rows, end = KJ.journal_index_at(self.ring_addr, self.data_addr, self.capacity, head, tail, self._index)
        if rows < 0:
            raise CorruptSegment(f"system {self.system.name!r}: the journal holds an impossible record at {end}")
        now = time.time_ns()
        mv, unpack, compression = self._view, _PAYLOAD_HEAD.unpack_from, self.compression
        records: list[tuple] = []  # (position, key, packed value or None, embedding or None)
        size = 0
        index = self._index[:rows].tolist()  # one conversion, not four numpy reads a record
        for i, (pos, off, n, kind) in enumerate(index):
            if kind != JOURNAL_PUT and kind != JOURNAL_PUT_EMB and kind != JOURNAL_DELETE:
                continue  # padding
            expiry, klen, vlen = unpack(mv, off)
            start = off + JOURNAL_PAYLOAD_FIXED
            if JOURNAL_PAYLOAD_FIXED + klen + vlen > n:
                raise CorruptSegment(f"system {self.system.name!r}: journal record at {pos} has impossible lengths")
            kb = bytes(mv[start : start + klen])
            if kind == JOURNAL_DELETE or (expiry and expiry <= now):
                records.append((pos, kb, None, None))
            else:
                value = mv[start + klen : start + klen + vlen]
                emb = bytes(mv[start + klen + vlen : off + n]) if kind == JOURNAL_PUT_EMB else None
                records.append((pos, kb, pack_kv(value, expiry, compression), emb))
            size += n
            if size >= BATCH_BYTES:
                end = index[i + 1][0] if i + 1 < rows else end
                break
        return records, end

    def _take_drain_lock(self) -> bool:
        owner = self.system.owner
        if KO.lockword_try_acquire(self.ring, DRAIN_LOCK_IDX, owner):
            return True
        holder = int(self.ring[DRAIN_LOCK_IDX])
        if holder == 0 or holder == owner:
            return False
        if self.system.owner_alive(holder) and not self._stalled(holder):
            return False
        # Dead or stalled mid-batch: safe to take over (apply_journal skips what it committed).
        return bool(KO.lockword_steal(self.ring, DRAIN_LOCK_IDX, holder, owner))

    def _stalled(self, holder: int) -> bool:
        pid = self.system.members.owner_pid(holder)
        if pid and not process_runnable(pid):
            return True
        return time.time_ns() - self._word(PROGRESS_IDX) > TAKEOVER_S * 1e9

    def drain(self) -> int:
        """Move one batch of records into LMDB if nobody else is draining (or the one who is has
        stalled or died). Returns the records moved (0: nothing to do, or someone else is)."""
        with self._drain_lock:
            head = self.head
            if head >= self.tail or not self._take_drain_lock():
                return 0
            try:
                head = self.head  # re-read under the drain lock: another drainer may have moved it
                tail = self.tail
                if head >= tail:
                    return 0
                records, end = self._records(head, tail)
                self.l3.apply_journal(self.position_key, records, end)
                self._advance_head(end)
            finally:
                KW.word_cas(self.ring_addr + DRAIN_LOCK_IDX * 8, self.system.owner, 0)
            self.drained_records += len(records)
            self.drains += 1
            return max(len(records), 1)

    def _advance_head(self, end: int) -> None:
        """Raise HEAD to ``end`` (never lower it: a drainer that stalled and resumed may hold an
        older end), note the progress, and wake writers waiting for it."""
        addr = self.ring_addr + RING_HEAD_IDX * 8
        while True:
            cur = KW.word_load(addr)
            if cur >= end or KW.word_cas(addr, cur, end) == cur:
                break
        KW.word_store(self.ring_addr + PROGRESS_IDX * 8, time.time_ns())
        KW.word_fetch_add(self.ring_addr + DRAINS_IDX * 8, 1)
        KW.word_fetch_add(self.ring_addr + RING_NOTIFY_IDX * 8, 1)
        if self._word(RING_WAITERS_IDX) > 0:
            futex_wake(self.ring_addr + RING_NOTIFY_IDX * 8)

    def _wait_for_head(self, target: int, deadline: float) -> bool:
        """Drain or sleep until HEAD reaches ``target`` (True) or ``deadline`` passes (False).
        Drains itself when it can (group commit), else sleeps on the journal's futex word."""
        notify = self.ring_addr + RING_NOTIFY_IDX * 8
        waiters = self.ring_addr + RING_WAITERS_IDX * 8
        while self.head < target:
            seen = KW.word_load(notify)
            if self.drain():
                continue
            if self.head >= target:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            KW.word_fetch_add(waiters, 1)
            try:
                futex_wait(notify, seen, min(left, 0.002))
            finally:
                KW.word_fetch_add(waiters, -1)
        return True

    def wait_durable(self, target: int, timeout: float, what: str = "flush") -> None:
        """Return once HEAD has passed ``target``: every record before it is committed in LMDB."""
        if not self._wait_for_head(target, time.monotonic() + timeout):
            raise TierError(
                f"{what}: the journal of system {self.system.name!r} did not reach position {target} "
                f"within {timeout:g}s (at {self.head}; drainer owner {int(self.ring[DRAIN_LOCK_IDX]):#x})"
            )

    def flush(self, timeout: float = 30.0) -> None:
        """Return once everything appended before the call is in LMDB."""
        self.wait_durable(self.tail, timeout)

    def make_room(self, deadline: float) -> None:
        """Called when an append found the journal full: repair dead writers, then drain (or wait
        for a drain) until HEAD moves. Raises ``TierError`` past ``deadline``."""
        self.recover()
        head = self.head
        if not self._wait_for_head(head + 1, min(deadline, time.monotonic() + 0.05)) and time.monotonic() > deadline:
            raise TierError(
                f"the write-behind journal ({self.capacity:,} bytes) of system {self.system.name!r} stayed "
                "full: nothing drained it in time"
            )

    # ----------------------------------------------------------------------------- the role
    def is_flusher(self) -> bool:
        return self._word(ROLE_IDX) == self.system.owner

    def _try_take_role(self) -> bool:
        owner = self.system.owner
        holder = self._word(ROLE_IDX)
        if holder == owner:
            return True
        if holder and self.system.owner_alive(holder) and not self._role_stalled():
            return False
        if KW.word_cas(self.ring_addr + ROLE_IDX * 8, holder, owner) == holder:
            if holder:
                self.takeovers += 1
            self._beat()
            return True
        return False

    def _role_stalled(self) -> bool:
        """A backlog with neither the flusher's heartbeat nor HEAD moving for TAKEOVER_S."""
        if self.head >= self.tail:
            return False
        now = time.time_ns()
        limit = TAKEOVER_S * 1e9
        return now - self._word(ROLE_BEAT_IDX) > limit and now - self._word(PROGRESS_IDX) > limit

    def _beat(self) -> None:
        KW.word_store(self.ring_addr + ROLE_BEAT_IDX * 8, time.time_ns())

    # ----------------------------------------------------------------------------- the thread
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"nt-memory-flusher-{self.system.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        idle = 0
        repaired_at = 0.0
        while not self._stop.is_set():
            try:
                if self.is_flusher() or self._try_take_role():
                    now = time.monotonic()
                    if now - repaired_at >= WATCH_S:
                        # A writer killed inside a stripe left its write half-done: finish or undo
                        # it now, not when the next writer of that stripe happens along, so no
                        # reader keeps seeing L1's old value while the journal carries the new one
                        # to L3. The flusher does it for every process.
                        repaired_at = now
                        self.recover()
                    self._beat()
                    if self.drain():
                        idle = 0
                        self.error = None
                        if self.backlog_bytes() < COALESCE_BYTES and self._word(RING_WAITERS_IDX) == 0:
                            # Nobody waits and little is pending: let records gather before the
                            # next transaction. Draining each put's record as it lands took a
                            # transaction per put, and its Python work took the GIL from the
                            # process's own writers (put p99 x6 in the process that flushes).
                            self._stop.wait(COALESCE_S)
                        continue
                    idle += 1
                    # Idle: back off from 0.25 ms to 8 ms between checks (a few hundred wake-ups a
                    # second at most while nothing is written).
                    self._stop.wait(min(0.00025 * (1 << min(idle, 5)), IDLE_MAX_S))
                else:
                    # Another process flushes and repairs. Each look here takes this process's
                    # GIL; at 20 looks a second they raised even a MessageQueue receiver's p99
                    # from 70 to 116 us in the same process (issue 11), and a takeover cannot come
                    # sooner than TAKEOVER_S anyway.
                    self.standby_looks += 1
                    self._stop.wait(STANDBY_S)
            except Exception as exc:  # noqa: BLE001 - e.g. a full disk: nothing is lost (HEAD did
                # not move), so keep the error for stats() and retry after a pause.
                self.error = exc
                self._stop.wait(1.0)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread; if we were the flusher, drain what is left and give the role up."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        if self.is_flusher():
            try:
                self.flush(timeout)
            finally:
                KW.word_cas(self.ring_addr + ROLE_IDX * 8, self.system.owner, 0)

    def verify(self) -> list[str]:
        """The Part protocol's check: positions in order and aligned, the backlog within the ring,
        and every record between HEAD and TAIL well formed. Reads only. ``[]`` when sound."""
        head, tail = self.head, self.tail
        if not 0 <= head <= tail or head & 15 or tail & 15:
            return [f"journal positions impossible: head {head}, tail {tail}"]
        if tail - head > self.capacity:
            return [f"journal backlog {tail - head:,} bytes exceeds its capacity {self.capacity:,}"]
        pos = head
        try:
            while pos < tail:
                _, pos = self._records(pos, tail)
        except CorruptSegment as exc:
            return [str(exc)]
        return []

    def close(self) -> None:
        """Stop this process's thread (see :meth:`stop`); an observer's view has none."""
        if self._thread is not None or self.is_flusher():
            self.stop()

    def stats(self) -> dict:
        now = time.time_ns()
        return {
            "capacity_bytes": self.capacity,
            "head": self.head,
            "tail": self.tail,
            "backlog_bytes": self.backlog_bytes(),
            "appends": int(self.ring[RING_APPENDS_IDX]),
            "append_bytes": int(self.ring[RING_APPEND_BYTES_IDX]),
            "drains": int(self.ring[DRAINS_IDX]),
            "flusher_owner": self._word(ROLE_IDX),
            "flusher_pid": self.system.members.owner_pid(self._word(ROLE_IDX)),
            "flusher_beat_age_s": (now - self._word(ROLE_BEAT_IDX)) / 1e9 if self._word(ROLE_BEAT_IDX) else None,
            "progress_age_s": (now - self._word(PROGRESS_IDX)) / 1e9 if self._word(PROGRESS_IDX) else None,
            "this_process_flushes": self.is_flusher(),
            "drained_records_here": self.drained_records,
            "takeovers_here": self.takeovers,
            "standby_looks_here": self.standby_looks,
            "last_error": repr(self.error) if self.error else None,
        }
