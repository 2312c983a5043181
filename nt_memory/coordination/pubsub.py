"""Pub/sub between processes: each topic is a broadcast ring in shared memory (kernels/ring.py).

Publishers append under the ring's lock word and never wait for subscribers; every subscriber has
its own cursor. A subscriber that falls more than the ring's capacity behind is lapped: it resumes
at the newest message and ``dropped`` counts exactly what it missed (received + dropped =
published since it subscribed). It never sees a half-overwritten message. An idle subscriber sleeps
on a futex and wakes within microseconds of a publish.
"""

from __future__ import annotations

import fnmatch
import os
import re
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any, NoReturn

import numpy as np

from nt_memory.durations import seconds
from nt_memory.errors import (
    ConfigError,
    CorruptSegment,
    SegmentClosed,
    SegmentError,
    TierError,
    ValueTooLarge,
    raise_status,
)
from nt_memory.kernels import Compiled, lazy
from nt_memory.kernels import status as S
from nt_memory.kernels.layout.ring import (
    KIND_MSG,
    LOCAL_SEQ_MASK,
    RING_APPEND_BYTES_IDX,
    RING_BRIDGE_WAITERS_IDX,
    RING_CAPACITY_IDX,
    RING_FORWARD_LOCAL_IDX,
    RING_FORWARD_NO_IDX,
    RING_FORWARD_POS_IDX,
    RING_HDR_BYTES,
    RING_LATEST_IDX,
    RING_LOCK_IDX,
    RING_MSG_COUNT_IDX,
    RING_NOTIFY_IDX,
    RING_REMOTE_SEQ_IDX,
    RING_SPINNERS_IDX,
    RING_TAIL_IDX,
    RING_TAIL_INTENT_IDX,
    RING_WAITERS_IDX,
    record_bytes,
)
from nt_memory.native import fast
from nt_memory.shm import coord_layout as C
from nt_memory.shm import layout as L
from nt_memory.shm.owned import BoundedWait, OwnedLock
from nt_memory.shm.segment import Segment, acquire_load
from nt_memory.shm.system import PartSpec, System
from nt_memory.shm.wait import WaitSteps, arun_sleeps, futex_wait_any, futex_wake, run_sleeps
from nt_memory.tiers.codec import decode, encode
from nt_memory.values import Duration, Value

KR = lazy("ring", globals())
KW = lazy("words", globals())
cabi = lazy("cabi", globals())

TOPIC_RE = re.compile(r"^[A-Za-z0-9_\-./]{1,40}$")
DEFAULT_TOPIC_BYTES = 1 << 20
SPIN_S = 50e-6  # the longest recv polls before it sleeps
SPIN_MIN_S = 5e-6  # a window below this is no window
SPIN_GROW_FACTOR = 2  # a message within this many SPIN_S of the recv's start (wake-up included) widens it


def next_spin(cur: float, waited: float, limit: float = SPIN_S) -> float:
    """A receiver's spin window after a recv that slept and got its message ``waited`` seconds
    after it began (the C receiver keeps the same rule in ns). Like Linux's guest halt-polling: a
    message that came soon after the spin gave up doubles the window, up to ``limit``; one that came
    later halves it, down to none. A subscriber paced slower than the window stops burning CPU on
    spins that never pay; a bursty one keeps them."""
    if waited <= SPIN_GROW_FACTOR * limit:
        return min(limit, max(SPIN_MIN_S, 2 * cur))
    cur /= 2
    return 0.0 if cur < SPIN_MIN_S else cur


def validate_topic(topic: object) -> bytes:
    if not isinstance(topic, str) or not TOPIC_RE.match(topic) or "//" in topic:
        raise ConfigError(f"topic={topic!r} is invalid: 1 to 40 characters from A-Z a-z 0-9 _ - . /")
    return topic.encode()


PATTERN_RE = re.compile(r"^[A-Za-z0-9_\-./*?\[\]!]{1,80}$")


def validate_pattern(pattern: object) -> re.Pattern[str]:
    """A glob over topic names, compiled; ConfigError for anything else."""
    if not isinstance(pattern, str) or not PATTERN_RE.match(pattern) or pattern.count("[") != pattern.count("]"):
        raise ConfigError(
            f"pattern={pattern!r} is invalid: 1 to 80 characters of topic names (A-Z a-z 0-9 _ - . /) "
            "and the glob characters * ? [ ] !"
        )
    return re.compile(fnmatch.translate(pattern))


MAX_TOPICS = 256  # topic names a system holds (each topic's ring is its own part)
MAX_SUBSCRIBERS = 1024  # subscriptions the board shows at once (more still work, unseen by observers)


class _Topic:
    """One topic's ring, mapped in this process. Its capacity comes from the segment's checksummed
    header (validated against the ring's own word once): the kernels never read a shared size."""

    def __init__(self, seg: Segment, index: int):
        capacity = seg.params[0]
        lay = C.TopicRingLayout.for_capacity(capacity)
        if capacity < 1024 or capacity % 64 or seg.size != lay.total_bytes:
            raise CorruptSegment(f"segment {seg.shm_name!r}: impossible topic ring capacity {capacity}")
        self.seg = seg
        self.index = index  # in the topic directory
        self.capacity = capacity
        self.hdr_addr = seg.address + lay.ring_offset
        self.data_addr = seg.address + lay.data_offset
        self.ring = seg.region(lay.ring_offset, RING_HDR_BYTES, np.int64)
        if int(self.ring[RING_CAPACITY_IDX]) != capacity:
            raise CorruptSegment(f"segment {seg.shm_name!r}: the ring's capacity word disagrees with its header")
        self.notify_addr = self.hdr_addr + RING_NOTIFY_IDX * 8
        self.waiters_addr = self.hdr_addr + RING_WAITERS_IDX * 8
        self.spinners_addr = self.hdr_addr + RING_SPINNERS_IDX * 8
        self.max_message = capacity // 4 - record_bytes(8) - 8  # the kernels' own formula
        seg.populate(lay.data_offset, capacity)  # publishers write through it, receivers read


class PubSub:
    """The topics of a system, as seen from this process."""

    PARTS: tuple[str, ...] = ("topics",)
    _publish: Any = Compiled("ring.ring_publish", "INT", "INT", "INT", "INT", "BYTES")  # the pure path's publish
    _inject: Any = Compiled("ring.ring_inject", "INT", "INT", "INT", "INT", "BYTES", "INT")  # the cluster bridge's
    _skip: Any = Compiled("ring.ring_skip", "INT", "INT", "INT", "INT")

    @classmethod
    def part_specs(cls, config=None, store=None) -> list[PartSpec]:
        """The Part protocol's specs (shm/parts.py): the topic directory (each topic's ring is a
        part made on the topic's first use)."""
        tl = C.TopicsLayout.for_count(MAX_TOPICS, MAX_SUBSCRIBERS)
        return [PartSpec("topics", L.KIND_TOPICS, tl.total_bytes, tl.params)]

    @classmethod
    def attach(cls, system: System) -> PubSub:
        """A view over ``system``'s topics (the Part protocol); observers may take it."""
        return cls(system)

    def __init__(self, system: System, topic_bytes: int = DEFAULT_TOPIC_BYTES):
        seg = system.parts["topics"]
        params = list(seg.params)
        max_topics, max_subs = (params[0], params[3]) if len(params) >= 5 else (0, 0)
        self.layout = C.TopicsLayout.for_count(max_topics, max_subs)
        if max_topics <= 0 or max_subs <= 0 or seg.size != self.layout.total_bytes or params[:5] != self.layout.params:
            raise CorruptSegment(f"segment {seg.shm_name!r}: its parameters {params} are no topic directory's")
        self.system = system
        self.topic_bytes = topic_bytes
        self.ctl = seg.region(self.layout.ctl_offset, C.CTL_WORDS * 8, np.int64)
        self.entries = seg.region(self.layout.entries_offset, max_topics * C.TOPIC_ENTRY_WORDS * 8, np.int64)
        self.board = seg.region(self.layout.subs_offset, max_subs * C.SUB_WORDS * 8, np.int64)
        self._topics: dict[bytes, _Topic] = {}
        self._dir_lock = OwnedLock(system, self.ctl, C.CTL_LOCK_IDX, "the topic directory")
        self.count_addr = self.ctl.ctypes.data + C.CTL_COUNT_IDX * 8
        self.closed = False

    # --------------------------------------------------------------------------------- topics
    def topic(self, name: str) -> _Topic:
        """The ring of topic ``name``, made on first use by any process."""
        key = validate_topic(name)
        t = self._topics.get(key)
        if t is not None:
            return t
        idx = self._find(key)
        if idx < 0:
            idx = self._create(key)
        seg = self.system.attach_segment(f"topic.{idx}", L.KIND_TOPIC)
        try:
            t = _Topic(seg, idx)
        except BaseException:
            seg.close()
            raise
        self._topics[key] = t
        return t

    def _find(self, key: bytes) -> int:
        for i in range(self.layout.max_topics):
            e = i * C.TOPIC_ENTRY_WORDS
            if acquire_load(self.entries, e + C.TOPIC_STATE_IDX) == 1:
                n = int(self.entries[e + C.TOPIC_NAME_LEN_IDX])
                name = self.entries[e + C.TOPIC_NAME_IDX : e + C.TOPIC_NAME_IDX + 5].tobytes()[:n]
                if name == key:
                    return i
        return -1

    def _create(self, key: bytes) -> int:
        with self._dir_lock:
            idx = self._find(key)
            if idx >= 0:
                return idx
            count = int(self.ctl[C.CTL_COUNT_IDX])
            if count >= self.layout.max_topics:
                raise ConfigError(f"system {self.system.name!r} already has {count} topics, its maximum")
            lay = C.TopicRingLayout.for_capacity(self.topic_bytes)
            seg = self.system.create_segment(f"topic.{count}", L.KIND_TOPIC, lay.total_bytes, [self.topic_bytes])
            lay.init(seg)
            seg.close()
            e = count * C.TOPIC_ENTRY_WORDS
            KW.store_word(self.entries, e + C.TOPIC_CAPACITY_IDX, self.topic_bytes)
            KW.store_word(self.entries, e + C.TOPIC_NAME_LEN_IDX, len(key))
            KW.store_words(self.entries, e + C.TOPIC_NAME_IDX, L.text_words(key, C.TOPIC_NAME_BYTES // 8))
            KW.store_word(self.entries, e + C.TOPIC_STATE_IDX, 1)  # published: readers match the name now
            KW.store_word(self.ctl, C.CTL_COUNT_IDX, count + 1)
            futex_wake(self.count_addr)  # pattern subscribers sleep on the count: a new topic
            return count

    def topic_count(self) -> int:
        """Topics made so far in the system (they are numbered in order of creation)."""
        return min(max(acquire_load(self.ctl, C.CTL_COUNT_IDX), 0), self.layout.max_topics)

    def topics(self, first: int = 0) -> list[str]:
        """The names of the system's topics, from the ``first``-made one on."""
        out = []
        for i in range(first, self.topic_count()):
            e = i * C.TOPIC_ENTRY_WORDS
            n = int(self.entries[e + C.TOPIC_NAME_LEN_IDX])
            out.append(self.entries[e + C.TOPIC_NAME_IDX : e + C.TOPIC_NAME_IDX + 5].tobytes()[:n].decode())
        return out

    # ------------------------------------------------------------------------- the Part protocol
    # ------------------------------------------------------------------------ subscriber board
    def claim_board_entry(self, topic_index: int, next_msg: int) -> np.ndarray | None:
        """Claim a free entry of the subscriber board (or one whose owner died) for a subscription
        of the topic at ``topic_index`` that takes message ``next_msg`` next; its NEXT, RECEIVED and
        DROPPED words, for the subscription to store into. None when every entry is taken by a
        live subscription: the subscription works, unseen by observers."""
        owner = self.system.owner
        members = self.system.members
        base = self.board.ctypes.data
        for i in range(self.layout.max_subscribers):
            cur = int(self.board[i * C.SUB_WORDS + C.SUB_OWNER_IDX])
            if cur != 0 and members.owner_alive(cur):
                continue
            if KW.word_cas(base + (i * C.SUB_WORDS + C.SUB_OWNER_IDX) * 8, cur, owner) != cur:
                continue
            e = i * C.SUB_WORDS
            row = np.array([topic_index, next_msg, 0, 0, time.time_ns()], np.int64)
            KW.store_words(self.board, e + C.SUB_TOPIC_IDX, row)
            return self.board[e + C.SUB_NEXT_IDX : e + C.SUB_DROPPED_IDX + 1]
        return None

    def release_board_entry(self, counters: np.ndarray) -> None:
        """Give back the entry whose counters :meth:`claim_board_entry` returned."""
        # ``counters`` keeps the mapping alive, so this store is safe even after the system closed.
        KW.word_cas(counters.ctypes.data - (C.SUB_NEXT_IDX - C.SUB_OWNER_IDX) * 8, self.system.owner, 0)

    def subscribers(self) -> list[dict]:
        """Every subscription on the board whose process is alive: its topic, pid, how many
        messages it has received and lost, and its lag (messages published to the topic that it
        has not taken yet)."""
        members = self.system.members
        names = self.topics()
        out = []
        for i in range(self.layout.max_subscribers):
            e = self.board[i * C.SUB_WORDS : (i + 1) * C.SUB_WORDS].copy()  # one snapshot of the entry
            owner = int(e[C.SUB_OWNER_IDX])
            topic = int(e[C.SUB_TOPIC_IDX])
            if owner == 0 or not 0 <= topic < len(names) or not members.owner_alive(owner):
                continue
            try:
                published: int | None = int(self.topic(names[topic]).ring[RING_MSG_COUNT_IDX])
            except (ConfigError, SegmentError):  # a directory entry a co-tenant damaged: no lag to show
                published = None
            out.append(
                {
                    "topic": names[topic],
                    "pid": members.owner_pid(owner),
                    "received": int(e[C.SUB_RECEIVED_IDX]),
                    "dropped": int(e[C.SUB_DROPPED_IDX]),
                    "lag": None if published is None else max(0, published - int(e[C.SUB_NEXT_IDX])),
                    "since_ns": int(e[C.SUB_SINCE_IDX]),
                }
            )
        return out

    def stats(self) -> dict:
        """Per topic: messages published, bytes appended, receivers asleep, ring bytes (and
        ``error`` for a topic whose directory entry is damaged); and every live subscription on the
        subscriber board with its lag."""
        topics = {}
        for name in self.topics():
            try:
                t = self.topic(name)
            except (ConfigError, SegmentError) as exc:  # a directory entry a co-tenant damaged
                topics[name] = {"messages": 0, "append_bytes": 0, "sleeping": 0, "ring_bytes": 0, "error": str(exc)}
                continue
            r = t.ring
            topics[name] = {
                "messages": int(r[RING_MSG_COUNT_IDX]),
                "append_bytes": int(r[RING_APPEND_BYTES_IDX]),
                "sleeping": int(r[RING_WAITERS_IDX]),
                "ring_bytes": t.capacity,
            }
        return {"topics": topics, "max_topics": self.layout.max_topics, "subscribers": self.subscribers()}

    def verify(self) -> list[str]:
        """Every topic's ring: positions aligned and in order (LATEST <= TAIL <= TAIL_INTENT), the
        capacity word its header's; every taken subscriber board entry names a topic and counts
        nothing negative. Reads only. ``[]`` when sound."""
        count = int(self.ctl[C.CTL_COUNT_IDX])
        if not 0 <= count <= self.layout.max_topics:
            return [f"topic directory counts {count} topics, over its {self.layout.max_topics}"]
        problems = []
        for name in self.topics():
            try:
                t = self.topic(name)
            except CorruptSegment as exc:
                problems.append(f"topic {name!r}: {exc}")
                continue
            r = t.ring
            tail, latest, intent = int(r[RING_TAIL_IDX]), int(r[RING_LATEST_IDX]), int(r[RING_TAIL_INTENT_IDX])
            ordered = 0 <= latest <= tail <= intent and int(r[RING_MSG_COUNT_IDX]) >= 0
            if not ordered or tail & 15 or latest & 15:
                problems.append(f"topic {name!r}: positions impossible (latest {latest}, tail {tail}, intent {intent})")
        for i in range(self.layout.max_subscribers):
            e = self.board[i * C.SUB_WORDS : (i + 1) * C.SUB_WORDS]
            if int(e[C.SUB_OWNER_IDX]) == 0:
                continue
            topic = int(e[C.SUB_TOPIC_IDX])
            counts = [int(e[k]) for k in (C.SUB_NEXT_IDX, C.SUB_RECEIVED_IDX, C.SUB_DROPPED_IDX)]
            if not 0 <= topic < count or min(counts) < 0:
                problems.append(f"subscriber board entry {i}: topic {topic} of {count}, counts {counts}")
        return problems

    # ---------------------------------------------------------------------------------- verbs
    def publish(self, topic: str, msg: Value) -> int:
        """Publish ``msg`` (bytes or JSON-able) to every subscriber of ``topic``. Returns the
        message's number on the topic. Raises ``ValueTooLarge`` over the topic's message limit,
        ``LockTimeout`` naming the pid of a publisher stalled inside a publish. Thread-safe."""
        self.system.check_open("pub/sub")
        t = self.topic(topic)
        payload = encode(msg)
        if len(payload) > t.max_message:
            self._too_large(topic, t, payload)
        wait = None
        while True:
            if fast is not None:  # one C call: the kernel, then the futex wake if anyone sleeps
                r = fast.publish(
                    cabi.RING_PUBLISH.address, t.hdr_addr, t.data_addr, t.capacity, self.system.owner, payload
                )
                if r >= 0:
                    return r >> 1
            else:
                r = self._publish(t.hdr_addr, t.data_addr, t.capacity, self.system.owner, payload)
                if r >= 0:
                    if r & 1:
                        futex_wake(t.notify_addr)
                    return r >> 1
            wait = self._not_appended(t, topic, r, wait)

    def _too_large(self, topic: str, t: _Topic, payload: bytes) -> NoReturn:
        raise ValueTooLarge(
            f"message is {len(payload):,} bytes encoded; topic {topic!r} takes at most {t.max_message:,}"
        )

    def _not_appended(self, t: _Topic, topic: str, r: int, wait: BoundedWait | None) -> BoundedWait:
        """After an append that returned status ``r``: raise for anything but BUSY; for BUSY,
        wait out (or repair) the holder of the append lock and return the wait to pass next."""
        if r != S.BUSY:
            raise_status(S.NAMES.get(r, str(r)), f"topic {topic!r}")
        return self._wait_append(t, topic, wait)

    # ------------------------------------------------------------------- the cluster bridge
    def inject(self, topic: str, payload: bytes, remote_seq: int) -> int:
        """Publish an encoded message that another host published (the cluster bridge only):
        subscribers see it as any other; the bridge's reader (:meth:`bridge_reader`) skips it;
        ``remote_seq`` (its cluster stream sequence) is noted in the ring under the same lock."""
        self.system.check_open("pub/sub")
        t = self.topic(topic)
        if len(payload) > t.max_message:
            self._too_large(topic, t, payload)
        wait = None
        while True:
            r = self._inject(t.hdr_addr, t.data_addr, t.capacity, self.system.owner, payload, remote_seq)
            if r >= 0:
                if r & 1:
                    futex_wake(t.notify_addr)
                return r >> 1
            wait = self._not_appended(t, topic, r, wait)

    def skip(self, topic: str, count: int, remote_seq: int) -> None:
        """Number ``count`` messages another host lost before they left it (the cluster bridge
        only): every subscriber of ``topic`` counts them as dropped."""
        self.system.check_open("pub/sub")
        t = self.topic(topic)
        wait = None
        while (r := self._skip(t.hdr_addr, self.system.owner, count, remote_seq)) != S.OK:
            wait = self._not_appended(t, topic, r, wait)

    def remote_seq(self, topic: str) -> int:
        """The cluster stream sequence of the last message injected into ``topic`` (0: none)."""
        return acquire_load(self.topic(topic).ring, RING_REMOTE_SEQ_IDX)

    def bridge_reader(self, topic: str) -> BridgeReader:
        return BridgeReader(self.topic(topic))

    def _wait_append(self, t: _Topic, topic: str, wait: BoundedWait | None) -> BoundedWait:
        """The ring's append lock stayed held: take it from a dead publisher (its half-written
        record was never published), or wait for a live one up to the stall bound."""
        wait = wait or BoundedWait(self.system, f"topic {topic!r}")
        holder = int(t.ring[RING_LOCK_IDX])
        if wait.holder_dead(holder):
            KR.ring_recover(t.ring, RING_LOCK_IDX, holder)
        else:
            wait.pause(holder)
        return wait

    def subscribe(self, topic: str, spin_s: float = SPIN_S, from_start: bool = False) -> Subscription:
        """A subscription that receives every message published to ``topic`` from now on (from the
        ring's first message with ``from_start``: for a topic known to be newer than the caller's
        interest); ``spin_s`` bounds how long its ``recv`` polls before it sleeps (:func:`next_spin`)."""
        self.system.check_open("pub/sub")
        t = self.topic(topic)
        if from_start:
            return Subscription(self, topic, t, 0, 0, spin_s)
        wait = None
        while True:
            cursor, first = KR.ring_snapshot(t.hdr_addr, self.system.owner)
            if cursor >= 0:
                return Subscription(self, topic, t, cursor, first, spin_s)
            wait = self._wait_append(t, topic, wait)

    def psubscribe(self, pattern: str) -> PatternSubscription:
        """A subscription to every topic whose name matches the glob ``pattern`` (``*`` any run of
        characters, slashes included, as in Redis; ``?`` one; ``[...]`` a set), those made later
        included: ``recv()`` returns ``(topic, message)``."""
        self.system.check_open("pub/sub")
        return PatternSubscription(self, validate_pattern(pattern))

    def close(self) -> None:
        for t in self._topics.values():
            t.seg.close()
        self._topics.clear()
        self.closed = True


class BridgeReader:
    """The cluster bridge's reader of one topic: this host's own messages, in order, from where
    the last bridge stopped (FORWARD_POS / FORWARD_NO / FORWARD_LOCAL in the ring, which
    :meth:`done` advances once the cluster has a message, so a bridge that takes over resumes
    there). Lapped, it knows how many of this host's messages it lost from their local numbers."""

    _receive: Any = Compiled("ring.ring_receive_any", "INT", "INT", "INT", "INT", "U8_ARRAY")

    def __init__(self, t: _Topic):
        self.t = t
        self.epoch = t.seg.created_ns
        self.cursor = acquire_load(t.ring, RING_FORWARD_POS_IDX)
        self.expected = acquire_load(t.ring, RING_FORWARD_NO_IDX)
        self.expected_local = acquire_load(t.ring, RING_FORWARD_LOCAL_IDX)
        self.bridge_waiters_addr = t.hdr_addr + RING_BRIDGE_WAITERS_IDX * 8
        # Only the role's holder sleeps there: whatever a bridge killed asleep left goes.
        KW.store_word(t.ring, RING_BRIDGE_WAITERS_IDX, 0)
        self.out = np.zeros(t.max_message + 16, np.uint8)
        self.lost = 0  # this host's messages the ring overwrote before they went out (lapped)

    def next(self) -> tuple[int, int, bytes] | None:
        """The next message of this host: (message number, how many of this host's messages
        before it were lost, encoded bytes); None for now."""
        t = self.t
        while True:
            n, nxt, msg_no, tag = self._receive(t.hdr_addr, t.data_addr, t.capacity, self.cursor, self.out)
            if n == S.NOT_FOUND:
                return None
            if n < 0:
                raise_status(S.NAMES.get(n, str(n)), "a bridged topic's ring")
            self.cursor, self.expected = nxt, msg_no + 1
            if tag & 0xFF == KIND_MSG:
                local = tag >> 8
                lost = (local - self.expected_local) & LOCAL_SEQ_MASK
                self.expected_local = (local + 1) & LOCAL_SEQ_MASK
                self.lost += lost
                return msg_no, lost, self.out[:n].tobytes()
            self.done()  # an injected one: nothing to send, but the place moves on

    def done(self) -> None:
        """The messages read so far are out: a bridge that takes over starts after them."""
        KW.store_word(self.t.ring, RING_FORWARD_POS_IDX, self.cursor)
        KW.store_word(self.t.ring, RING_FORWARD_NO_IDX, self.expected)
        KW.store_word(self.t.ring, RING_FORWARD_LOCAL_IDX, self.expected_local)

    def pending(self) -> bool:
        return acquire_load(self.t.ring, RING_TAIL_IDX) > self.cursor


def wait_for_any(readers: list[BridgeReader], timeout: float) -> None:
    """Sleep until one of ``readers``' topics has a message past its reader, or ``timeout``, for
    the cluster bridge's thread, so a bridged message goes out as soon as it is published. Counted
    in BRIDGE_WAITERS, not WAITERS: publishers wake it, and the topic's own receivers keep their
    spin window (they spin only while no other receiver sleeps)."""
    for r in readers:
        KW.word_fetch_add(r.bridge_waiters_addr, 1)
    try:
        seen = [(r.t.notify_addr, KW.word_load(r.t.notify_addr)) for r in readers]
        if not any(r.pending() for r in readers):
            futex_wait_any(seen, timeout)
    finally:
        for r in readers:
            KW.word_fetch_add(r.bridge_waiters_addr, -1)


def _release_in(pid: int, pubsub: PubSub, counters: np.ndarray) -> None:
    """A subscription's board entry given back, by the process that claimed it only (a forked
    child shares the parent's owner word and must not free the parent's entry)."""
    if os.getpid() == pid:
        pubsub.release_board_entry(counters)


class Subscription:
    """Messages of one topic for one subscriber.

    ``recv(timeout=None)`` blocks (sleeping) and returns None when ``timeout`` passes;
    ``try_recv()`` never blocks; ``await arecv(timeout)``; iteration; ``dropped``; ``close()``.
    Thread-safe: threads sharing a subscription share its cursor, so each message goes to one of
    them (received + dropped still counts every message exactly once).
    """

    # The pure path's store of its board counters: one compiled call, no per-call type dispatch.
    _store_counts: Any = Compiled("words.store_words", "INT_ARRAY", "INT", "INT_ARRAY")

    def __init__(self, pubsub: PubSub, topic: str, ring: _Topic, cursor: int, first_msg: int, spin_s: float = SPIN_S):
        self.topic = topic
        self._pubsub = pubsub
        self._t = ring
        self._cursor = cursor
        self._expected = first_msg
        self._received = 0
        self._dropped = 0
        self._lock = threading.Lock()
        self.closed = False
        self._rx = None
        self._spin = self._spin_max = spin_s  # the pure path's window (the C receiver keeps its own)
        # This subscription's NEXT / RECEIVED / DROPPED words on the subscriber board (None: full),
        # stored after every receive for observers; given back on close or when collected.
        self._board = pubsub.claim_board_entry(ring.index, first_msg)
        self._unboard = (
            weakref.finalize(self, _release_in, os.getpid(), pubsub, self._board) if self._board is not None else None
        )
        if fast is not None:
            # The cursor lives in C: one call per receive, and the whole wait (spin, then futex
            # sleep) in C with the GIL released. Its state is guarded by the GIL.
            self._rx = fast.receiver(
                ring.hdr_addr,
                ring.data_addr,
                ring.capacity,
                cursor,
                first_msg,
                ring.capacity // 4,
                cabi.RING_RECEIVE.address,
                int(spin_s * 1e9),
                decode,
                ring,
                self._board.ctypes.data if self._board is not None else 0,
                self._board,  # keeps the board mapped while the receiver stores into it
            )
        else:
            self._out = np.zeros(ring.capacity // 4, np.uint8)
            self._outmv = self._out.data
            self._counts = np.zeros(3, np.int64)  # private: composed here, stored in one call

    @property
    def received(self) -> int:
        """Messages received so far."""
        return self._rx.received if self._rx is not None else self._received

    @property
    def dropped(self) -> int:
        """Messages lost to lapping so far (received + dropped = published since subscribing)."""
        return self._rx.dropped if self._rx is not None else self._dropped

    @property
    def spin_window(self) -> float:
        """Seconds the next ``recv`` polls before it sleeps (adapted by :func:`next_spin`)."""
        return self._rx.spin_ns / 1e9 if self._rx is not None else self._spin

    def _check_open(self) -> None:
        if self.closed:
            raise SegmentClosed(f"subscription to {self.topic!r} is closed")
        system = self._pubsub.system
        if system.closed:  # the message is built only then: this runs on every receive
            system.check_open(f"the subscription to {self.topic!r}")

    def try_recv(self) -> Any:
        """The next message, or None if there is none yet."""
        self._check_open()
        if self._rx is not None:
            try:
                return self._rx.try_recv()
            except RuntimeError as exc:
                raise TierError(f"receive from {self.topic!r} failed: {exc}") from None
        t = self._t
        with self._lock:
            n, self._cursor, msg_no = KR.ring_receive(t.hdr_addr, t.data_addr, t.capacity, self._cursor, self._out)
            if n == S.NOT_FOUND:
                return None
            if n < 0:
                raise_status(S.NAMES.get(n, str(n)), f"topic {self.topic!r}")
            if msg_no > self._expected:
                self._dropped += msg_no - self._expected
            self._expected = msg_no + 1
            self._received += 1
            if self._board is not None:
                counts = self._counts
                counts[0], counts[1], counts[2] = self._expected, self._received, self._dropped
                self._store_counts(self._board, 0, counts)
            return decode(self._outmv[:n])  # a copy, made before another thread reuses the buffer

    def recv(self, timeout: Duration | None = None) -> Any:
        """The next message; sleeps until one arrives. None when ``timeout`` (seconds or a
        timedelta; None waits forever) passes."""
        timeout = seconds(timeout, "timeout", allow_zero=True)
        if self._rx is not None:
            self._check_open()
            try:
                return self._rx.recv(-1 if timeout is None else int(timeout * 1e9))
            except RuntimeError as exc:
                raise TierError(f"receive from {self.topic!r} failed: {exc}") from None
        msg = self.try_recv()
        if msg is not None:
            return msg
        # Spin briefly first (DESIGN.md: waiting spins, then sleeps): a message that arrives
        # within the window is taken without the ~50-150 us of a futex sleep and wake-up.
        # One receiver at a time, and none while others sleep (kernels/ring.py: SPINNERS).
        t = self._t
        start = time.perf_counter()
        if self._spin > 0 and KW.word_load(t.waiters_addr) == 0 and KW.word_cas(t.spinners_addr, 0, 1) == 0:
            try:
                spin_end = start + min(self._spin, timeout if timeout is not None else self._spin)
                while time.perf_counter() < spin_end:
                    msg = self.try_recv()
                    if msg is not None:
                        return msg
            finally:
                KW.word_store(t.spinners_addr, 0)
        deadline = None if timeout is None else time.monotonic() + timeout
        msg = run_sleeps(self._sleeps(deadline))
        if msg is not None:
            self._spin = next_spin(self._spin, time.perf_counter() - start, self._spin_max)
        return msg

    def _sleeps(self, deadline: float | None) -> WaitSteps[Any]:
        """The sleeping part of a receive, as a wait generator (shm/wait.py): counted among the
        ring's sleepers (so publishers wake it), it re-checks the ring after every wake and yields
        the ring's notify word to sleep on; returns the message, or None at ``deadline``."""
        t = self._t
        KW.word_fetch_add(t.waiters_addr, 1)
        try:
            while True:
                seen = KW.word_load(t.notify_addr)
                msg = self.try_recv()
                if msg is not None:
                    return msg
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                yield ((t.notify_addr, seen),), left if left is not None else 1.0
        finally:
            KW.word_fetch_add(t.waiters_addr, -1)

    async def arecv(self, timeout: Duration | None = None) -> Any:
        """``recv`` for coroutines: never blocks the event loop and takes no thread per wait (the
        process's waker thread sleeps on the ring and signals the loop's self-pipe). Cancelling it
        at any point loses no message: only this coroutine, in the loop's thread, takes one."""
        timeout = seconds(timeout, "timeout", allow_zero=True)
        msg = self.try_recv()
        if msg is not None or timeout == 0:
            return msg
        deadline = None if timeout is None else time.monotonic() + timeout
        return await arun_sleeps(self._sleeps(deadline))

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Any:
        """``async for msg in sub``: each message as it comes; ends when the subscription closes."""
        while not self.closed:
            msg = await self.arecv(1.0)
            if msg is not None:
                return msg
        raise StopAsyncIteration

    def __iter__(self) -> Iterator[Any]:
        while not self.closed:
            msg = self.recv(timeout=1.0)
            if msg is not None:
                yield msg

    def close(self) -> None:
        self.closed = True
        if self._unboard is not None:
            self._unboard()  # once: a finalizer runs at most once

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PatternSubscription:
    """Messages of every topic whose name matches a glob, as ``(topic, message)``.

    Topics that exist at subscription are received from that moment on; a topic made later (by
    any process) is found on the next receive and received from its first message, so nothing
    published to a matching topic after the call is missed unless lapped. ``dropped`` counts
    exactly what lapping cost, over all topics (received + dropped = published to matching topics
    since subscribing). ``recv`` sleeps on every matching ring and on the topic directory at once.
    """

    def __init__(self, pubsub: PubSub, pattern: re.Pattern[str]):
        self.pattern = pattern
        self._pubsub = pubsub
        self._subs: list[Subscription] = []
        self._next = 0  # the topic the next receive tries first: each gets its turn
        self._lock = threading.Lock()
        self.closed = False
        self._seen = pubsub.topic_count()
        for name in pubsub.topics():
            if pattern.match(name):
                self._subs.append(pubsub.subscribe(name))

    @property
    def topics(self) -> list[str]:
        """The matching topics found so far."""
        return [s.topic for s in self._subs]

    @property
    def received(self) -> int:
        return sum(s.received for s in self._subs)

    @property
    def dropped(self) -> int:
        return sum(s.dropped for s in self._subs)

    def _refresh(self) -> None:
        """Subscribe to the matching topics made since the last look (from their first message:
        all of it was published after this subscription began)."""
        count = self._pubsub.topic_count()
        if count == self._seen:
            return
        with self._lock:
            for name in self._pubsub.topics(self._seen):
                if self.pattern.match(name):
                    self._subs.append(self._pubsub.subscribe(name, from_start=True))
            self._seen = count

    def try_recv(self) -> tuple[str, object] | None:
        """The next ``(topic, message)`` of any matching topic, or None if there is none yet."""
        if self.closed:
            raise SegmentClosed(f"pattern subscription {self.pattern.pattern!r} is closed")
        self._refresh()
        subs = self._subs
        n = len(subs)
        for i in range(n):
            sub = subs[(self._next + i) % n]
            msg = sub.try_recv()
            if msg is not None:
                self._next = (self._next + i + 1) % n
                return sub.topic, msg
        return None

    def _sleeps(self, deadline: float | None) -> WaitSteps[tuple[str, Any] | None]:
        """The wait generator (shm/wait.py) of a receive: sleeps on every matching ring's notify
        word and on the directory's topic count, counted among each ring's sleepers."""
        counted: list[Subscription] = []
        try:
            while True:
                for sub in self._subs[len(counted) :]:
                    KW.word_fetch_add(sub._t.waiters_addr, 1)
                    counted.append(sub)
                words = [(s._t.notify_addr, KW.word_load(s._t.notify_addr)) for s in counted]
                words.append((self._pubsub.count_addr, KW.word_load(self._pubsub.count_addr)))
                found = self.try_recv()
                if found is not None:
                    return found
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                yield words, left if left is not None else 1.0
        finally:
            for sub in counted:
                KW.word_fetch_add(sub._t.waiters_addr, -1)

    def recv(self, timeout: Duration | None = None) -> tuple[str, object] | None:
        """The next ``(topic, message)``; sleeps until one arrives. None when ``timeout`` (seconds
        or a timedelta; None waits forever) passes."""
        timeout = seconds(timeout, "timeout", allow_zero=True)
        found = self.try_recv()
        if found is not None or timeout == 0:
            return found
        return run_sleeps(self._sleeps(None if timeout is None else time.monotonic() + timeout))

    async def arecv(self, timeout: Duration | None = None) -> tuple[str, object] | None:
        """``recv`` for coroutines, on the same terms as :meth:`Subscription.arecv`."""
        timeout = seconds(timeout, "timeout", allow_zero=True)
        found = self.try_recv()
        if found is not None or timeout == 0:
            return found
        return await arun_sleeps(self._sleeps(None if timeout is None else time.monotonic() + timeout))

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        while not self.closed:
            found = self.recv(timeout=1.0)
            if found is not None:
                yield found

    def __aiter__(self) -> PatternSubscription:
        return self

    async def __anext__(self) -> tuple[str, object]:
        while not self.closed:
            found = await self.arecv(1.0)
            if found is not None:
                return found
        raise StopAsyncIteration

    def close(self) -> None:
        self.closed = True
        for sub in self._subs:
            sub.close()

    def __enter__(self) -> PatternSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
