"""A process's connection to NATS JetStream, and the format of what nt-memory keeps in the bucket.

The connection runs on an event loop of its own (a daemon thread), so the synchronous API can call
into it (:meth:`ClusterClient.call`) and the bridge role can run its tasks there. It reconnects
forever after a server restart; only the first connection is bounded (``connect_timeout``: an
unreachable server raises :class:`ClusterError` at open).

The bucket (one per swarm, ``ClusterConfig.bucket``) holds:

- ``_nt-memory``: the marker, written when nt-memory creates the bucket. A bucket that exists
  without it and holds any key belongs to someone else: it is refused, never misread.
- ``k.<base64url of namespace NUL key>``: a value, ``NTM1 | data expiry (int64 LE, wall ns, 0 =
  never) | encoded value`` (tiers/codec.py's bytes, tag first); a delete is JetStream's delete
  marker. The entry's revision (the stream sequence) orders the key's writes on every host.
- ``l.<base64url of the lock name>``: a cluster lock (see .locks).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import struct
import threading
from typing import Any

import xxhash

from nt_memory.config import ClusterConfig
from nt_memory.errors import ClusterError

MARKER_KEY = "_nt-memory"
MARKER = b"nt-memory bucket 1"
VALUE_KEY_PREFIX = "k."
LOCK_KEY_PREFIX = "l."
VALUE_MAGIC = b"NTM1"
_EXPIRY = struct.Struct("<q")
KV_OPERATION = "KV-Operation"  # JetStream's key-value headers: a delete is a message with no body
KV_DELETE = "DEL"
KV_PURGE = "PURGE"
GAP = "Ntm-Gap"  # a bridged topic's message saying how many of its host's messages were lost
WRONG_LAST_SEQUENCE = (10071, 10164)  # JetStream's API error codes for a failed compare-and-set
DELETED = 0  # the digest of "no value" (a real state's digest is odd)
UNAPPLIED = 2  # the digest noted for an entry left unapplied (a local write goes out over it)


def encode_key(prefix: str, raw: bytes) -> str:
    """A bucket key for stored key bytes: base64url keeps any byte within the characters NATS allows."""
    return prefix + base64.urlsafe_b64encode(raw).decode("ascii")


def decode_key(prefix: str, key: str) -> bytes | None:
    if not key.startswith(prefix):
        return None
    try:
        return base64.urlsafe_b64decode(key[len(prefix) :])
    except ValueError:
        return None


def pack_value(encoded: bytes | memoryview, data_expiry: int) -> bytes:
    return VALUE_MAGIC + _EXPIRY.pack(data_expiry) + bytes(encoded)


def unpack_value(data: bytes) -> tuple[bytes, int] | None:
    """(encoded value, data expiry) of a bucket value, or None if nt-memory did not write it."""
    if len(data) < 13 or not data.startswith(VALUE_MAGIC):
        return None
    return data[12:], _EXPIRY.unpack_from(data, 4)[0]


def digest(state: tuple[bytes | memoryview, int] | None) -> int:
    """A 64-bit digest of a key's state (value and data expiry; DELETED for none): how the bridge
    recognises a value it applied from the bucket when it comes back through its own journal."""
    if state is None:
        return DELETED
    encoded, expiry = state
    return xxhash.xxh3_64_intdigest(bytes(encoded), seed=expiry & 0xFFFF_FFFF_FFFF_FFFF) | 1


class ClusterClient:
    """One process's connection to the cluster (``ClusterConfig``), on its own event-loop thread."""

    def __init__(self, config: ClusterConfig, label: str):
        import nats  # the cluster extra: imported only when a cluster is configured

        self.config = config
        self.label = label
        self.nats = nats
        self.last_error: BaseException | None = None
        self.reconnects = 0
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=f"nt-memory-cluster-{label}", daemon=True)
        self._thread.start()
        self.nc: Any = None
        self.js: Any = None
        self.kv: Any = None
        try:
            self.call(self._connect(), config.connect_timeout + 10.0)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------------------- plumbing
    def call(self, coro, timeout: float):
        """Run ``coro`` on the client's loop and wait for its result, up to ``timeout`` seconds."""
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            if fut.done():
                raise  # the coroutine's own TimeoutError (LockTimeout is one)
            fut.cancel()
            raise ClusterError(f"the cluster ({self.where}) did not answer within {timeout:g}s") from None

    def spawn(self, coro) -> concurrent.futures.Future:
        """Start ``coro`` on the client's loop without waiting for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    @property
    def where(self) -> str:
        return f"{', '.join(self.config.servers)} bucket {self.config.bucket!r}"

    async def _error(self, exc: BaseException) -> None:
        self.last_error = exc  # kept for stats(); the client reconnects by itself

    async def _reconnected(self) -> None:
        self.reconnects += 1

    async def _connect(self) -> None:
        cfg = self.config
        options: dict[str, Any] = {
            "servers": cfg.servers,
            "name": f"nt-memory {self.label}",
            "connect_timeout": cfg.connect_timeout,
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,  # a server restart is waited out, never fatal
            "reconnect_time_wait": 0.1,
            "error_cb": self._error,
            "reconnected_cb": self._reconnected,
        }
        for key, value in (
            ("user", cfg.user),
            ("password", cfg.password),
            ("token", cfg.token),
            ("user_credentials", cfg.credentials),
            ("tls", cfg.tls),
        ):
            if value is not None:
                options[key] = value
        try:
            self.nc = await asyncio.wait_for(self.nats.connect(**options), cfg.connect_timeout)
        except (TimeoutError, OSError, self.nats.errors.Error) as exc:
            cause = self.last_error or exc
            raise ClusterError(
                f"cannot reach the cluster at {', '.join(cfg.servers)} within connect_timeout="
                f"{cfg.connect_timeout:g}s ({type(cause).__name__}: {cause}); "
                "is nats-server running there, with JetStream (-js)?"
            ) from cause
        self.js = self.nc.jetstream()
        self.kv = await self._bucket()

    async def _bucket(self):
        """The swarm's bucket: created (with the marker) if missing; refused if it holds someone else's keys."""
        from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NoKeysError

        cfg = self.config
        try:
            kv = await self.js.key_value(cfg.bucket)
        except BucketNotFoundError:
            kv = await self.js.create_key_value(bucket=cfg.bucket, history=1, replicas=cfg.replicas)
            await kv.put(MARKER_KEY, MARKER)
            return kv
        try:
            marker = (await kv.get(MARKER_KEY)).value
        except KeyNotFoundError:
            marker = None
        if marker == MARKER:
            return kv
        try:
            keys = await kv.keys()
        except NoKeysError:
            keys = []
        if marker is None and not keys:
            await kv.put(MARKER_KEY, MARKER)  # an empty bucket made beforehand: ours from now on
            return kv
        raise ClusterError(
            f"bucket {cfg.bucket!r} at {', '.join(cfg.servers)} is not an nt-memory bucket (its marker key "
            f"{MARKER_KEY!r} is {'missing' if marker is None else repr(marker[:40])}, and it holds {len(keys)} "
            "keys): refused rather than misread; name another bucket in ClusterConfig(bucket=...)"
        )

    # --------------------------------------------------------------------------------- values
    async def publish_value(self, kb: bytes, state: tuple[bytes | memoryview, int] | None) -> int:
        """Put (or delete, for None) stored key ``kb`` in the bucket; its new revision."""
        subject = f"$KV.{self.config.bucket}.{encode_key(VALUE_KEY_PREFIX, kb)}"
        if state is None:
            ack = await self.js.publish(subject, b"", headers={KV_OPERATION: KV_DELETE})
        else:
            ack = await self.js.publish(subject, pack_value(*state))
        return int(ack.seq)

    async def read_value(self, kb: bytes) -> tuple[int, tuple[bytes, int] | None]:
        """(revision, state) of stored key ``kb`` in the bucket now (revision 0: never written)."""
        from nats.js.errors import KeyNotFoundError

        key = encode_key(VALUE_KEY_PREFIX, kb)
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError as exc:  # a deleted key's error carries its delete marker
            return (int(exc.entry.revision) if exc.entry is not None else 0), None
        state = unpack_value(entry.value)
        if state is None:
            raise ClusterError(f"bucket {self.config.bucket!r}: key {key!r} holds a value nt-memory did not write")
        return int(entry.revision), state

    async def _shutdown(self) -> None:
        """Close the connection, then end every task still on the loop (a watch's reader, say)
        here, before the loop closes, rather than in a garbage collection later."""
        if self.nc is not None:
            try:
                await self.nc.close()
            except Exception:  # noqa: BLE001 - closing: the server may be gone already
                pass
            self.nc = None
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.loop.shutdown_asyncgens()

    # ------------------------------------------------------------------------------- messages
    @property
    def stream_name(self) -> str:
        return f"NTM-{self.config.bucket}-T"

    async def topic_stream(self) -> None:
        """The stream bridged topics travel on (created once, with ``replicas`` copies; messages
        kept an hour, duplicates within two minutes dropped)."""
        if getattr(self, "_stream_ready", False):
            return
        from nats.js.api import StorageType, StreamConfig
        from nats.js.errors import NotFoundError

        try:
            await self.js.stream_info(self.stream_name)
        except NotFoundError:
            await self.js.add_stream(
                StreamConfig(
                    name=self.stream_name,
                    subjects=[f"ntm.{self.config.bucket}.t.>"],
                    storage=StorageType.FILE,
                    num_replicas=self.config.replicas,
                    max_age=3600.0,
                    duplicate_window=120.0,
                )
            )
        self._stream_ready = True

    def _subject(self, host_id: str, topic: str) -> str:
        return f"ntm.{self.config.bucket}.t.{host_id}.{encode_key('', topic.encode())}"

    def message_origin(self, subject: str) -> tuple[str | None, str]:
        """(host id, topic) of a bridged message's subject; (None, "") if it is not one."""
        parts = subject.split(".")
        raw = decode_key("", parts[4]) if len(parts) == 5 else None
        if raw is None:
            return None, ""
        try:
            return parts[3], raw.decode()
        except UnicodeDecodeError:
            return None, ""

    async def publish_message(self, host_id: str, topic: str, epoch: int, msg_no: int, payload: bytes) -> None:
        """Send one of this host's messages (deduplicated by the stream on its id)."""
        msg_id = f"{host_id}.{epoch}.{encode_key('', topic.encode())}.{msg_no}"
        await self.js.publish(self._subject(host_id, topic), payload, headers={"Nats-Msg-Id": msg_id})

    async def publish_gap(self, host_id: str, topic: str, epoch: int, msg_no: int, lost: int) -> None:
        """Say that ``lost`` of this host's messages before ``msg_no`` will never come."""
        msg_id = f"{host_id}.{epoch}.{encode_key('', topic.encode())}.{msg_no}.gap"
        await self.js.publish(self._subject(host_id, topic), b"", headers={"Nats-Msg-Id": msg_id, GAP: str(lost)})

    @staticmethod
    def gap_of(msg) -> int:
        """How many messages a gap message says were lost (0: an ordinary message)."""
        raw = (msg.headers or {}).get(GAP)
        try:
            return max(0, int(raw)) if raw is not None else 0
        except ValueError:
            return 0

    async def follow_messages(self, start_seq: int):
        """An ordered consumer of every bridged message, from stream sequence ``start_seq`` (0:
        only new ones)."""
        from nats.js.api import ConsumerConfig, DeliverPolicy

        if start_seq > 0:
            config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start_seq)
        else:
            config = ConsumerConfig(deliver_policy=DeliverPolicy.NEW)
        return await self.js.subscribe(f"ntm.{self.config.bucket}.t.>", ordered_consumer=True, config=config)

    def close(self) -> None:
        if not self.loop.is_closed() and self._thread.is_alive():
            try:
                self.call(self._shutdown(), 10.0)
            except Exception:  # noqa: BLE001 - closing
                pass
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
            if not self._thread.is_alive():
                self.loop.close()
