"""One search index per system: the process that holds it answers the others' searches.

An hnswlib index of 1M 128-d vectors takes ~0.65 GB in the process that holds it, so every
searching process holding its own multiplies the footprint. With ``index_sharing="shared"`` (the
default) one process at a time holds the *server* role (the SERVER word of the embedding log's
control line, like the journal's flusher role): its thread subscribes to the request topic and
answers each request on the reply topic. Every other process sends its query vectors there and
waits for the keys and distances; it never loads hnswlib. The values of the hits are read by the
asking process from L1 and L3 as for a local search.

The role: whoever searches while no live process serves takes it (subscribing to requests before
it publishes itself, so no request sent to it can go unheard), and keeps it until it closes. A
holder that died, or whose thread has not gone round its loop for :data:`STALE_S` (SIGSTOP), is
replaced by the next asker, which loads the saved index and indexes the log's tail. A request
with no reply for :data:`RESEND_S` is sent again (a lapped ring, a holder that changed); a
holder that lost the role drops its index.

An asker the holder cannot hear (a co-tenant rewrote a topic's name in the directory, so the asker
opened a second topic of that name) would wait for a live holder until :data:`WAIT_S`: the holder
stamps SERVER_IDLE_NS with the start of each poll that found no request, and a poll that began
after the asker's request was published and still found nothing is a miss. After
:data:`DEAF_MISSES` of them (each followed by a resend) the asker searches an index of its own for
:data:`RETRY_SHARING_S`, as when the topics cannot be used at all. A holder that is building or
searching is not idle, so a long build is still waited for.

Wake-ups: both subscriptions spin their adaptive windows (``pubsub.next_spin``) before they sleep,
an asker's up to :data:`SPIN_REPLY_S`, the holder's up to :data:`SERVE_SPIN_S`, so back-to-back
searches pay neither futex wake-up.

Messages (little-endian, on the topics :data:`REQUEST_TOPIC` and :data:`REPLY_TOPIC`)::

    request  client owner q | seq q | top_k i | ef i | queries i | namespace length i (-1: every
             namespace) | key prefix length i | namespace | key prefix | queries * dim float32
    reply    client owner q | seq q | status i (0 ok, 1 error) | first query i | queries here i |
             queries asked i | service ns q | per query: hits I, per hit: distance f | key length I
             | key (namespace \\0 key); an error's body is its message

A reply that would not fit one message is split by queries; a request, by the asker.
"""

from __future__ import annotations

import collections
import struct
import threading
import time

import numpy as np

from nt_memory.coordination.pubsub import PubSub
from nt_memory.errors import ConfigError, LockTimeout, NtMemoryError, TierError
from nt_memory.kernels import lazy
from nt_memory.shm import embed_layout as E
from nt_memory.tiers.l2 import VectorTier, check_search_args, hits_from_keys

KW = lazy("words", globals())

MODES = ("shared", "local")
REQUEST_TOPIC = "_ntm/search/requests"
REPLY_TOPIC = "_ntm/search/replies"
STALE_S = 5.0  # a holder whose thread has not gone round its loop for this long is replaced
RESEND_S = 2.0  # a request with no reply for this long is sent again
WAIT_S = 600.0  # the longest a search waits for a live holder (a 1M build on two cores)
RETRY_SHARING_S = 30.0  # after the topics failed us, search locally this long before trying again
DEAF_MISSES = 3  # holder polls that began after our request and found none: it cannot hear us
POLL_S = 0.1  # the serving thread's receive slice (its beat) and a waiting asker's
# The longest an asker's reply subscription polls before it sleeps: a reply is due within about
# one search, so the adaptive window (``pubsub.next_spin``) grows to cover it. The poll runs in C
# with the GIL released and a pause per turn: a Python loop of try_recv on the other hyperthread
# slowed the holder's search itself (at 1M: +160 us end to end against +31 us of transport).
SPIN_REPLY_S = 2e-3
# The holder's request subscription polls up to this long before it sleeps: an asker's next search
# comes after it has made its hits and done its own work, often more than pub/sub's 50 us; the
# adaptive window shrinks to nothing when searches come further apart (``pubsub.next_spin``).
SERVE_SPIN_S = 300e-6
_REQ = struct.Struct("<qqiiiii")
_REP = struct.Struct("<qqiiiiq")
_HIT = struct.Struct("<fI")
_COUNT = struct.Struct("<I")


class _Unheard(TierError):
    """The holder is live but does not get this process's requests, or we do not get its replies."""


class SearchService:
    """This process's searches: answered here when it holds the index (or ``mode="local"``), else
    sent to the holder."""

    def __init__(self, l2: VectorTier, pubsub: PubSub, mode: str = "shared"):
        if mode not in MODES:
            raise ConfigError(f"index_sharing={mode!r} must be one of {MODES}")
        self.l2 = l2
        self.pubsub = pubsub
        self.system = l2.system
        self.mode = mode
        self._role_addr = l2.ctl_addr + E.SERVER_IDX * 8
        self._beat_addr = l2.ctl_addr + E.SERVER_BEAT_IDX * 8
        self._idle_addr = l2.ctl_addr + E.SERVER_IDLE_IDX * 8
        self._lock = threading.Lock()  # one exchange at a time per process: replies are matched by seq
        self._seq = 0
        self._replies = None  # this process's subscription to the reply topic, made on first use
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.sent = 0
        self.served = 0
        self.takeovers = 0
        self.error: Exception | None = None
        self._max_request = self._max_reply = 0  # the topics' message limits, read on first use
        self._local_until = 0.0  # monotonic time until which searches stay local (topics failed)
        self._overhead_ns: collections.deque[int] = collections.deque(maxlen=1024)
        l2.on_progress = self._beat_if_serving

    # ------------------------------------------------------------------------------- the role
    def _holder(self) -> int:
        return KW.word_load(self._role_addr)

    def serves(self) -> bool:
        return self._holder() == self.system.owner

    def _beat(self) -> int:
        now = time.time_ns()
        KW.word_store(self._beat_addr, now)
        return now

    def _beat_if_serving(self) -> None:
        if self.serves():
            self._beat()

    def _usable(self, holder: int, check_pid: bool = True) -> bool:
        """``holder``'s thread went round its loop within STALE_S and (``check_pid``) its process
        is alive. The pid check reads ``/proc``: tens of microseconds, so a search skips it until
        its reply is late."""
        if not holder or time.time_ns() - KW.word_load(self._beat_addr) > STALE_S * 1e9:
            return False
        return not check_pid or self.system.owner_alive(holder)

    def _take_role(self, holder: int) -> bool:
        """Become the holder in place of ``holder`` (0, dead or stalled). Requests are subscribed
        to first: one published after the role word names us is always heard."""
        requests = self.pubsub.subscribe(REQUEST_TOPIC, spin_s=SERVE_SPIN_S)
        if KW.word_cas(self._role_addr, holder, self.system.owner) != holder:
            requests.close()
            return False
        self.takeovers += holder != 0
        self._beat()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._serve, args=(requests,), name=f"nt-memory-search-{self.system.name}", daemon=True
        )
        self._thread.start()
        return True

    def offer(self) -> bool:
        """Take the role if no usable process holds it (a process that just built the index)."""
        if self.mode != "shared":
            return False
        holder = self._holder()
        return holder == self.system.owner or (not self._usable(holder) and self._take_role(holder))

    # ------------------------------------------------------------------------------ searching
    def search(self, namespace: bytes | None, queries, top_k: int, ef: int | None, prefix: bytes, single: bool):
        """A list of :class:`Hit` (values None) per query, nearest first."""
        check_search_args(top_k, ef)
        if self.mode == "local" or self._holder() == self.system.owner:
            return self._local(namespace, queries, top_k, ef, prefix, single, self.l2.hits)
        if time.monotonic() < self._local_until:
            return self._local(namespace, queries, top_k, ef, prefix, single, self.l2.hits)
        qs = self.l2.queries(queries, single)
        ef = self.l2.params.ef if ef is None else ef  # the asker's default, not the holder's
        deadline = time.monotonic() + WAIT_S
        try:
            while True:
                holder = self._holder()
                if holder == self.system.owner:
                    return self._local(namespace, qs, top_k, ef, prefix, False, self.l2.hits)
                if not self._usable(holder, check_pid=False):
                    if self._take_role(holder):
                        return self._local(namespace, qs, top_k, ef, prefix, False, self.l2.hits)
                    continue
                found = self._ask(holder, namespace, qs, top_k, ef, prefix, deadline)
                if found is not None:
                    return [hits_from_keys(f) for f in found]
        except (LockTimeout, ConfigError, _Unheard) as exc:
            # The search topics cannot be used (a stopped process holds the topic directory or a
            # topic's append lock; every topic slot is taken; the holder cannot hear us): search
            # an index of our own, and try sharing again after a while.
            self.error = exc
            self._local_until = time.monotonic() + RETRY_SHARING_S
            return self._local(namespace, qs, top_k, ef, prefix, False, self.l2.hits)

    def _local(self, namespace, queries, top_k, ef, prefix, single, how=None):
        """This process's index answers (``how``: ``VectorTier.hits`` or, by default, keys)."""
        allow = self.l2.record_filter(prefix) if prefix else None
        return (how or self.l2.search_keys)(namespace, queries, top_k, ef, allow, single)

    def _ask(self, holder, namespace, qs, top_k, ef, prefix, deadline):
        """The holder's answer to ``qs``, or None if the role moved meanwhile (ask again)."""
        with self._lock:
            if self._replies is None:
                self._replies = self.pubsub.subscribe(REPLY_TOPIC, spin_s=SPIN_REPLY_S)
            if not self._max_request:
                self._max_request = self.pubsub.topic(REQUEST_TOPIC).max_message
            rows = max(1, (self._max_request - 256 - len(prefix)) // (4 * self.l2.dim))
            out: list[list[tuple[bytes, float]]] = []
            for lo in range(0, len(qs), rows):
                part = self._exchange(holder, namespace, qs[lo : lo + rows], top_k, ef, prefix, deadline)
                if part is None:
                    return None
                out.extend(part)
            return out

    def _exchange(self, holder, namespace, qs, top_k, ef, prefix, deadline):
        self._seq += 1
        seq, me = self._seq, self.system.owner
        ns = b"" if namespace is None else namespace
        head = _REQ.pack(me, seq, top_k, ef, len(qs), -1 if namespace is None else len(ns), len(prefix))
        request = b"".join([head, ns, prefix, qs[0].tobytes() if len(qs) == 1 else np.stack(qs).tobytes()])
        results: list | None = [None] * len(qs)
        got = 0
        clock = time.perf_counter_ns
        start = clock()
        self.pubsub.publish(REQUEST_TOPIC, request)
        self.sent += 1
        sent_at, sent_ns = time.monotonic(), time.time_ns()
        service_ns = misses = 0
        replies = self._replies
        while got < len(qs):
            msg = replies.recv(POLL_S)
            now = time.monotonic()
            if msg is None:
                if self._holder() != holder or not self._usable(holder):
                    return None
                if now > deadline:
                    pid = self.system.members.owner_pid(holder)
                    raise TierError(f"the search index's holder (pid {pid}) gave no answer in {WAIT_S:.0f} s")
                idle = KW.word_load(self._idle_addr) > sent_ns  # it polled since, and found nothing
                if idle:
                    misses += 1
                    if misses >= DEAF_MISSES:
                        pid = self.system.members.owner_pid(holder)
                        raise _Unheard(
                            f"the search index's holder (pid {pid}) does not hear this process's requests "
                            f"(or it does not get the replies): searching locally for {RETRY_SHARING_S:.0f} s"
                        )
                if idle or now - sent_at > RESEND_S:
                    self.pubsub.publish(REQUEST_TOPIC, request)
                    sent_at, sent_ns = now, time.time_ns()
                continue
            if not isinstance(msg, bytes) or len(msg) < _REP.size:
                continue
            owner, rseq, status, first, n, total, took = _REP.unpack_from(msg)
            if owner != me or rseq != seq:
                continue  # another asker's reply, or an old one
            if status != 0:
                raise TierError(f"the search index's holder refused the search: {msg[_REP.size :].decode()}")
            if total != len(qs) or not 0 <= first <= total - n or results is None:
                raise TierError("the search index's holder sent an impossible reply")
            parsed = _parse_hits(msg, _REP.size, n)
            for i, hits in enumerate(parsed):
                if results[first + i] is None:
                    got += 1
                results[first + i] = hits
            service_ns += took
        self._overhead_ns.append(clock() - start - service_ns)
        return results

    # -------------------------------------------------------------------------------- serving
    def _serve(self, requests) -> None:
        me = self.system.owner
        try:
            while not self._stop.is_set() and self._holder() == me:
                polled = self._beat()
                try:
                    msg = requests.recv(POLL_S)
                    if msg is None:
                        KW.word_store(self._idle_addr, polled)  # askers tell from this that we miss theirs
                        self.l2.sync()  # idle: index new vectors now, not inside a search
                        continue
                    self._answer(msg)
                except Exception as exc:  # noqa: BLE001 - kept for stats(); the next request is served
                    self.error = exc
                    self._stop.wait(POLL_S)
        finally:
            requests.close()
            if self._holder() != me:
                self.l2.drop_index()  # replaced (we were stalled): the new holder's index serves

    def _answer(self, msg: bytes) -> None:
        if not isinstance(msg, bytes) or len(msg) < _REQ.size:
            return  # not a request (anything may be published to a topic)
        owner, seq, top_k, ef, nq, ns_len, prefix_len = _REQ.unpack_from(msg)
        dim = self.l2.dim
        body = _REQ.size + max(ns_len, 0) + prefix_len
        if nq < 1 or ns_len < -1 or prefix_len < 0 or len(msg) != body + nq * dim * 4:
            self._reply_error(owner, seq, nq, "malformed request")
            return
        ns = None if ns_len < 0 else msg[_REQ.size : _REQ.size + ns_len]
        prefix = msg[_REQ.size + max(ns_len, 0) : body]
        qs = np.frombuffer(msg, np.float32, nq * dim, body).reshape(nq, dim)
        start = time.perf_counter_ns()
        try:
            found = self._local(ns, qs[0] if nq == 1 else qs, top_k, ef, prefix, nq == 1)
        except NtMemoryError as exc:
            self._reply_error(owner, seq, nq, f"{type(exc).__name__}: {exc}")
            return
        took = time.perf_counter_ns() - start
        if not self._max_reply:
            self._max_reply = self.pubsub.topic(REPLY_TOPIC).max_message
        limit = self._max_reply - _REP.size
        first = 0
        while first < nq:
            parts, size, n = [], 0, 0
            for hits in found[first:]:
                enc = _encode_hits(hits)
                if n and size + len(enc) > limit:
                    break
                parts.append(enc)
                size += len(enc)
                n += 1
            if size > limit:
                self._reply_error(owner, seq, nq, f"one query's hits take {size:,} bytes, over a message's limit")
                return
            head = _REP.pack(owner, seq, 0, first, n, nq, took if first == 0 else 0)
            self.pubsub.publish(REPLY_TOPIC, head + b"".join(parts))
            first += n
        self.served += 1

    def _reply_error(self, owner: int, seq: int, nq: int, text: str) -> None:
        self.pubsub.publish(REPLY_TOPIC, _REP.pack(owner, seq, 1, 0, 0, max(nq, 0), 0) + text.encode()[:4096])

    # ------------------------------------------------------------------------------ lifecycle
    def stats(self) -> dict:
        holder = self._holder()
        over = sorted(self._overhead_ns)
        return {
            "index_sharing": self.mode,
            "index_holder_pid": self.system.members.owner_pid(holder) if holder else None,
            "this_process_serves": holder == self.system.owner,
            "searches_served_here": self.served,
            "searches_sent_here": self.sent,
            # What a search answered by another process paid beyond the holder's own search time:
            # the request and reply through the rings and the two wake-ups (median of the last 1024).
            "remote_overhead_p50_us": over[len(over) // 2] / 1e3 if over else None,
            "search_takeovers_here": self.takeovers,
            "search_last_error": repr(self.error) if self.error else None,
        }

    def stop(self) -> None:
        """Stop the serving thread (the role stays ours until :meth:`close`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def close(self) -> None:
        """Stop serving and give the role up (the caller saves the index first)."""
        self.stop()
        KW.word_cas(self._role_addr, self.system.owner, 0)
        if self._replies is not None:
            self._replies.close()
            self._replies = None
        self.l2.on_progress = None


def _encode_hits(hits) -> bytes:
    parts = [_COUNT.pack(len(hits))]
    for kb, dist in hits:
        parts.append(_HIT.pack(dist, len(kb)))
        parts.append(kb)
    return b"".join(parts)


def _parse_hits(msg: bytes, off: int, n: int) -> list[list[tuple[bytes, float]]]:
    out = []
    try:
        for _ in range(n):
            (count,) = _COUNT.unpack_from(msg, off)
            off += _COUNT.size
            hits = []
            for _ in range(count):
                dist, klen = _HIT.unpack_from(msg, off)
                off += _HIT.size
                if off + klen > len(msg):
                    raise struct.error("key past the end")
                hits.append((msg[off : off + klen], dist))
                off += klen
            out.append(hits)
    except struct.error:
        raise TierError("the search index's holder sent a truncated reply") from None
    return out
