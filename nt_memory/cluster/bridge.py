"""The bridge role: one process per host replicates the key-value state through the bucket.

Every process of a system that joined a cluster runs :class:`Bridge` on its client's loop; one of
them at a time holds the role, a lease on the local lock :data:`ROLE_LOCK` (renewed every
:data:`RENEW_S`), so a holder that dies or stops (SIGSTOP) loses it at lease end and another
process takes it over. The holder runs two tasks:

- **out**: what the journal made durable in LMDB is noted in L3's ``outbox`` (tiers/l3.py), in the
  same transaction; the bridge publishes each noted key's current state (a value, or a delete)
  and removes the note once the bucket acknowledged it. A change waits there, durably, through
  server restarts and reboots: nothing acknowledged locally is dropped.
- **in**: a watch on the bucket's values. An entry is applied (through the ordinary journaled
  write, so L1, the journal and LMDB stay in step) when its revision is above the last one this
  host saw for the key (``replica``: key -> revision, digest) and no local write of the key is
  waiting to go out: that write will be published with a higher revision and win everywhere. So
  on every host a key ends at its highest revision.

A value applied from the bucket comes back through the local journal into ``outbox``; its digest
equals the one ``replica`` noted, so it is not published again. Local reads are eventually
consistent: a write on another host is visible here after the replication lag (``stats()``).

Topics under ``ClusterConfig.topics`` are bridged through a JetStream stream (``NTM-<bucket>-T``,
one subject per host and topic, so each host's messages keep their order). Two more tasks:

- **topics out**: a reader of each bridged topic's ring sends this host's messages (kind MSG) in
  ring order, each with a message id JetStream deduplicates (host, ring epoch, message number),
  and moves the ring's FORWARD_POS past it once acknowledged: a bridge that takes over resumes
  there, and what the old one sent twice is dropped by the stream. A reader that was lapped
  knows from the messages' local numbers how many of this host's it lost, and sends that count
  (a gap) first: the other hosts' rings number them, so their subscribers count them dropped.
- **topics in**: a consumer of the stream injects other hosts' messages into the local rings
  (kind REMOTE, so they are not sent back) with their stream sequence noted in the ring under the
  same lock (REMOTE_SEQ); a bridge that takes over resumes after it. Local subscribers see every
  host's messages, and a lapped one counts what it lost as for local ones.
"""

from __future__ import annotations

import asyncio
import itertools
import struct
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from nt_memory.cluster.client import (
    KV_DELETE,
    KV_PURGE,
    UNAPPLIED,
    VALUE_KEY_PREFIX,
    ClusterClient,
    decode_key,
    digest,
    unpack_value,
)
from nt_memory.coordination.pubsub import wait_for_any
from nt_memory.errors import NtMemoryError, StaleToken
from nt_memory.tiers.l3 import CLUSTER_KEY, ColdStore

ROLE_LOCK = "nt-memory/cluster-bridge"
ROLE_LEASE_S = 2.0  # a bridge that dies or stops loses the role this long after its last renewal
RENEW_S = 0.5
OUT_BATCH = 256
OUT_POLL_S = 0.001  # the out task looks at the journal's drain counter (a shared word) this often
OUT_LOOK_S = 0.05  # and at the outbox itself at least this often (a write straight to LMDB)
OUT_RETRY_S = 0.1  # after a failed publish (the server away)
TOPICS_LOOK_S = 0.25  # how often the topics-out task looks for new bridged topics
TOPICS_BATCH = 128  # messages of one topic in flight at once
_REPLICA = struct.Struct("<qQ")  # revision, digest

State = tuple[bytes | memoryview, int] | None  # (encoded value, data expiry), or None: deleted


class Bridge:
    """This process's candidacy for the bridge role, and the role's tasks while it holds it.

    ``pending(kb)``: the key's newest local state not yet in LMDB (the journal), ``...`` if none.
    ``apply(kb, state)``: write a state from the bucket locally (journaled, as a put or delete).
    ``locks``: the system's local lock table, whose lease on :data:`ROLE_LOCK` is the role.
    ``drains()``: the journal's drain counter; the out task reads the outbox when it moves."""

    def __init__(
        self,
        client: ClusterClient,
        store: ColdStore,
        locks: Any,
        pending: Callable[[bytes], Any],
        apply: Callable[[bytes, State], None],
        drains: Callable[[], int],
        pubsub: Any = None,
        host_id: str = "",
    ):
        self.client = client
        self.store = store
        self.locks = locks
        self.pending = pending
        self.apply = apply
        self.drains = drains
        self.pubsub = pubsub
        self.host_id = host_id
        self.messages_out = 0
        self.messages_in = 0
        self.messages_lost = 0  # this host's messages overwritten before they went out
        self.token: Any = None
        self.published = 0
        self.applied = 0
        self.skipped_local = 0  # bucket entries a pending local write will overwrite
        self.echoes = 0  # outbox notes whose state the bucket already had
        self.foreign = 0  # bucket values nt-memory did not write (skipped)
        self.takeovers = 0
        self.lags: deque[float] = deque(maxlen=1024)  # seconds from the bucket to this host, per entry
        self.error: BaseException | None = None
        self._tasks: list[asyncio.Task] = []
        # Entries seen since the last write of ``replica`` (written in batches: a transaction
        # per entry would be an fsync per entry); read before LMDB by :meth:`replica`.
        self._unsaved: dict[bytes, tuple[int, int]] = {}
        self._serial = asyncio.Lock()  # publishing a batch and applying an entry never interleave
        self._stop = asyncio.Event()
        store.write([("meta", CLUSTER_KEY, client.config.bucket.encode())])  # from now on kv changes go out
        self._main = client.spawn(self._run())

    # ----------------------------------------------------------------------------------- role
    @property
    def holds_role(self) -> bool:
        return self.token is not None

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._keep_role()
            except NtMemoryError as exc:
                self.error = exc
            try:
                await asyncio.wait_for(self._stop.wait(), RENEW_S)
            except TimeoutError:
                pass
        await self._drop_role()

    def _keep_role(self) -> None:
        if self.token is not None:
            try:
                self.token = self.locks.extend(self.token, ROLE_LEASE_S)
                return
            except StaleToken:  # stopped past the lease: another process has the role now
                self.token = None
                for task in self._tasks:
                    task.cancel()
                self._tasks = []
        try:
            self.token = self.locks.acquire(ROLE_LOCK, 0, ROLE_LEASE_S)
        except NtMemoryError:
            return  # another process holds it
        self.takeovers += 1
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._out()), loop.create_task(self._in())]
        if self.pubsub is not None and self.client.config.topics:
            self._tasks += [loop.create_task(self._topics_out()), loop.create_task(self._topics_in())]

    async def _drop_role(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.token is not None:
            try:
                self.locks.release(self.token)
            except NtMemoryError:
                pass
            self.token = None

    # ---------------------------------------------------------------------------- replica map
    def replica(self, kb: bytes) -> tuple[int, int]:
        """(revision, digest) of the last bucket entry of ``kb`` this host saw; (0, 0) if none."""
        hit = self._unsaved.get(kb)
        if hit is not None:
            return hit
        raw = self.store.get("replica", kb)
        return _REPLICA.unpack(raw) if raw else (0, 0)

    def _save_replicas(self) -> None:
        if self._unsaved:
            self._note_replicas(self._unsaved)
            self._unsaved = {}

    def _note_replicas(self, seen: dict[bytes, tuple[int, int]]) -> None:
        """Record revisions (never lowering one) in one transaction."""
        db = self.store.dbs["replica"]

        def run(txn):
            for kb, (rev, dig) in seen.items():
                raw = txn.get(kb, db=db)
                if raw is None or _REPLICA.unpack(raw)[0] < rev:
                    txn.put(kb, _REPLICA.pack(rev, dig), db=db)

        if seen:
            self.store.transact(run)

    def stored_state(self, kb: bytes) -> State:
        """The key's state in LMDB now."""
        from nt_memory.tiers.l3 import unpack_kv

        raw = self.store.get("kv", kb)
        if raw is None:
            return None
        encoded, expiry = unpack_kv(raw)
        return bytes(encoded), expiry

    def _waiting_digest(self, kb: bytes) -> int | None:
        """The digest of ``kb``'s newest local state if it has yet to go out (in the journal, or
        noted in the outbox), else None."""
        pending = self.pending(kb)
        if pending is ...:
            if self.store.get("outbox", kb) is None:
                return None
            pending = self.stored_state(kb)
        return digest(pending)

    def local_write_waiting(self, kb: bytes) -> bool:
        """Has this host a write of ``kb`` that the bucket has not had yet (not an applied entry
        coming back)? Then an incoming entry must not overwrite it: it goes out next, and wins."""
        waiting = self._waiting_digest(kb)
        return waiting is not None and waiting != self.replica(kb)[1]

    # ------------------------------------------------------------------------------------ out
    async def _out(self) -> None:
        while True:
            seen = self.drains()
            try:
                if await self._publish_batch():
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a server away: the notes stay, retry
                self.error = exc
                await asyncio.sleep(OUT_RETRY_S)
                continue
            # Nothing noted: wait for the journal to drain something (one shared word, polled),
            # or OUT_LOOK_S (writes too large for the journal go straight to LMDB).
            deadline = time.monotonic() + OUT_LOOK_S
            while self.drains() == seen and time.monotonic() < deadline:
                await asyncio.sleep(OUT_POLL_S)

    async def _publish_batch(self) -> int:
        notes = self.store.items("outbox")
        try:
            batch = list(itertools.islice(notes, OUT_BATCH))
        finally:
            notes.close()  # type: ignore[attr-defined]  # a generator: ends its read transaction
        if not batch:
            return 0
        # Serialised with the watch's applying: a remote entry applied while a publish is in
        # flight would otherwise be taken for a local write after it and published back, over
        # a newer revision.
        async with self._serial:
            for kb, _stamp in batch:
                state = self.stored_state(kb)
                dig = digest(state)
                if dig == self.replica(kb)[1]:
                    self.echoes += 1
                    continue
                rev = await self.client.publish_value(kb, state)
                if rev > self.replica(kb)[0]:  # (the watch may have seen it come back already)
                    self._unsaved[kb] = (rev, dig)
                self.published += 1
            self._save_replicas()  # before the notes go: a restart must not publish them again
        db = self.store.dbs["outbox"]

        def run(txn):
            for kb, stamp in batch:
                if txn.get(kb, db=db) == stamp:  # not written again meanwhile
                    txn.delete(kb, db=db)

        self.store.transact(run)
        return len(batch)

    def outbox_count(self) -> int:
        return self.store.count("outbox")

    # ------------------------------------------------------------------------------------- in
    async def _in(self) -> None:
        while True:
            watcher = None
            try:
                watcher = await self.client.kv.watch(VALUE_KEY_PREFIX + ">")
                await self._apply_updates(watcher)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the server went away: watch again from the
                # latest revision of each key; what was already applied is skipped by revision
                self.error = exc
                await asyncio.sleep(0.2)
            finally:
                if watcher is not None:
                    try:
                        await watcher.stop()
                    except Exception:  # noqa: BLE001
                        pass

    async def _apply_updates(self, watcher) -> None:
        reconnects = self.client.reconnects
        while True:
            try:
                entry = await watcher.updates(timeout=0.5)
            except Exception:  # noqa: BLE001 - nats' TimeoutError: nothing new
                entry = None
                if self.client.reconnects != reconnects:
                    raise ConnectionResetError("reconnected: watching again") from None
            if entry is None:
                self._save_replicas()  # idle: note what was seen so far
                continue
            async with self._serial:
                self._apply_entry(entry)
            if len(self._unsaved) >= OUT_BATCH:
                self._save_replicas()

    def _apply_entry(self, entry) -> None:
        """One bucket entry: applied here if its revision is newer than the last seen for its key
        and no local write of the key waits to go out (caller holds ``_serial``)."""
        kb = decode_key(VALUE_KEY_PREFIX, entry.key)
        if kb is None:
            return
        rev = int(entry.revision)
        if entry.operation in (KV_DELETE, KV_PURGE):
            state = None
        else:
            state = unpack_value(entry.value)
            if state is None:
                self.foreign += 1
                return
        known_rev, known_dig = self.replica(kb)
        if rev <= known_rev:
            return
        dig = digest(state)
        waiting = self._waiting_digest(kb) if dig != known_dig else None
        if waiting == dig:
            pass  # this host's own write, back from the bucket before its publish returned
        elif dig != known_dig:
            if waiting is not None and waiting != known_dig:
                # The local write goes out next, over this entry; noting the entry as
                # unapplied keeps that so even if the local state returns to what the
                # bucket had before (its digest then matches no note: it is published).
                self.skipped_local += 1
                self._unsaved[kb] = (rev, UNAPPLIED)
                return
            self.apply(kb, state)
            self.applied += 1
            if entry.created is not None:
                self.lags.append(max(0.0, time.time() - entry.created.timestamp()))
        self._unsaved[kb] = (rev, dig)

    # --------------------------------------------------------------------------------- topics
    async def _topics_out(self) -> None:
        readers: dict[str, Any] = {}
        looked = 0.0
        while True:
            try:
                await self.client.topic_stream()
                while True:
                    if time.monotonic() - looked > TOPICS_LOOK_S:  # topics made since
                        looked = time.monotonic()
                        for name in self.pubsub.topics():
                            if name not in readers and self.client.config.bridges(name):
                                readers[name] = self.pubsub.bridge_reader(name)
                    sent = 0
                    for name, reader in readers.items():
                        sent += await self._send_batch(name, reader)
                    self.messages_out += sent
                    if not sent:
                        # Sleep as a subscriber of the bridged topics (in a worker thread, with
                        # the GIL released), so the next message goes out as soon as it lands.
                        await asyncio.get_running_loop().run_in_executor(
                            None, wait_for_any, list(readers.values()), TOPICS_LOOK_S
                        ) if readers else await asyncio.sleep(TOPICS_LOOK_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the server away: resume from the rings' places
                self.error = exc
                readers = {}
                looked = 0.0
                await asyncio.sleep(OUT_RETRY_S)

    async def _send_batch(self, name: str, reader) -> int:
        """Send up to TOPICS_BATCH of this host's messages of one topic, in flight together (one
        connection keeps their order; JetStream drops a repeat by its id, so a batch that fails
        is simply sent again), then move the ring's place past them. Returns the messages sent."""
        sends: list[Coroutine[Any, Any, None]] = []
        messages = 0
        while messages < TOPICS_BATCH and (m := reader.next()) is not None:
            msg_no, lost, payload = m
            if lost:  # lapped: the other hosts' subscribers count these as dropped
                sends.append(self.client.publish_gap(self.host_id, name, reader.epoch, msg_no, lost))
                self.messages_lost += lost
            sends.append(self.client.publish_message(self.host_id, name, reader.epoch, msg_no, payload))
            messages += 1
        if sends:
            await asyncio.gather(*sends)
            reader.done()
        return messages

    async def _topics_in(self) -> None:
        while True:
            sub = None
            try:
                await self.client.topic_stream()
                seqs = [self.pubsub.remote_seq(n) for n in self.pubsub.topics() if self.client.config.bridges(n)]
                seqs = [s for s in seqs if s > 0]
                sub = await self.client.follow_messages(min(seqs) + 1 if seqs else 0)
                reconnects = self.client.reconnects
                while True:
                    try:
                        msg = await sub.next_msg(timeout=0.5)
                    except Exception:  # noqa: BLE001 - nats' TimeoutError: nothing new
                        if self.client.reconnects != reconnects:
                            raise ConnectionResetError("reconnected: following again") from None
                        continue
                    origin, topic = self.client.message_origin(msg.subject)
                    if origin is None or origin == self.host_id or not self.client.config.bridges(topic):
                        continue
                    seq = int(msg.metadata.sequence.stream)
                    if seq <= self.pubsub.remote_seq(topic):
                        continue  # injected before a takeover
                    gap = self.client.gap_of(msg)
                    if gap:
                        self.pubsub.skip(topic, gap, seq)
                        continue
                    self.pubsub.inject(topic, msg.data, seq)
                    self.messages_in += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - follow again from the rings' REMOTE_SEQ
                self.error = exc
                await asyncio.sleep(0.2)
            finally:
                if sub is not None:
                    try:
                        await sub.unsubscribe()
                    except Exception:  # noqa: BLE001
                        pass

    # ---------------------------------------------------------------------------------- reads
    def wait_published(self, kb: bytes, timeout: float) -> bool:
        """Wait until no local write of ``kb`` is waiting to go out (True), or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while self.local_write_waiting(kb):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    def stats(self) -> dict:
        lags = sorted(self.lags)

        def pct(q: float) -> float | None:
            return lags[min(len(lags) - 1, int(q * len(lags)))] if lags else None

        return {
            "bucket": self.client.config.bucket,
            "servers": self.client.config.servers,
            "connected": bool(self.client.nc is not None and self.client.nc.is_connected),
            "reconnects": self.client.reconnects,
            "this_process_bridges": self.holds_role,
            "outbox": self.outbox_count(),
            "published_here": self.published,
            "applied_here": self.applied,
            "skipped_for_local_writes": self.skipped_local,
            "echoes": self.echoes,
            "foreign_values": self.foreign,
            "topics": list(self.client.config.topics),
            "messages_out_here": self.messages_out,
            "messages_in_here": self.messages_in,
            "messages_lost_here": self.messages_lost,
            "replication_lag_p50_s": pct(0.5),
            "replication_lag_p99_s": pct(0.99),
            "last_error": repr(self.error) if self.error else None,
        }

    def close(self) -> None:
        async def stop() -> None:
            self._stop.set()

        if not self.client.loop.is_closed():
            self.client.call(stop(), 5.0)
            try:
                self._main.result(10)
            except Exception:  # noqa: BLE001 - closing
                pass
