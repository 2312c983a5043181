"""``scope="cluster"`` locks: one key per lock in the swarm's bucket, taken by compare-and-set.

Acquiring creates ``l.<name>`` only if it is absent (or deleted), or replaces a holder whose lease
has ended, both conditional on the revision read; the token's fence is the revision of that
write. Revisions are the bucket's stream sequence, so fences grow across hosts and across server
restarts. The entry names its holder and a random id the token carries; renewal and release write
conditional on the revision this process last wrote (else on the one read back, after checking
the id), and a release leaves a free entry rather than a delete marker, so the next acquire from
this process is one round trip too. A holder whose lease ran out (replaced or not) gets
:class:`StaleToken`. A token never changes (as a local
one). A host that dies keeps its locks until their lease ends (lease ends are compared on wall
clocks: keep hosts' clocks in sync, as NTP does, to well under a lease).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from typing import NamedTuple

from nt_memory.cluster.client import LOCK_KEY_PREFIX, WRONG_LAST_SEQUENCE, ClusterClient, encode_key
from nt_memory.durations import duration_ns, seconds
from nt_memory.errors import ConfigError, LockTimeout, StaleToken

RETRY_S = (0.002, 0.05)  # a waiter's pause between attempts: from, to
RELEASED = json.dumps({"holder": "", "until_ns": 0, "id": 0}).encode()  # a free lock's entry


class ClusterLockToken(NamedTuple):
    """Proof of holding cluster lock ``name``: ``fence`` (the bucket revision of the acquiring
    write) grows with every new holder on any host; ``id`` is the holding's random id."""

    name: str
    fence: int
    id: int
    holder: str
    scope: str = "cluster"


class ClusterLocks:
    def __init__(self, client: ClusterClient, holder: str, default_lease: float):
        self.client = client
        self.holder = holder  # host / system / pid
        self.default_lease_ns = int(default_lease * 1e9)
        self.acquired = 0
        self.contended = 0
        # Per lock key: (the revision this process last wrote, the holding id it wrote; 0 =
        # released), so a renewal, a release and a re-acquire from here take one round trip.
        self._known: dict[str, tuple[int, int]] = {}
        self._until: dict[int, int] = {}  # holding id -> lease end (wall ns) of this process's tokens

    def _key(self, name: str) -> str:
        if not isinstance(name, str) or not name or len(name.encode()) > 1024:
            raise ConfigError(f"lock name {name!r} must be a non-empty str of at most 1024 UTF-8 bytes")
        return encode_key(LOCK_KEY_PREFIX, name.encode())

    def _body(self, lease_ns: int, holding: int) -> bytes:
        self._until[holding] = time.time_ns() + lease_ns
        return json.dumps({"holder": self.holder, "until_ns": time.time_ns() + lease_ns, "id": holding}).encode()

    def _lease(self, lease) -> int:
        lease_ns = duration_ns(lease, "lease") if lease is not None else 0
        return lease_ns or self.default_lease_ns  # a cluster lock always has one: hosts die

    # ----------------------------------------------------------------------------- operations
    def acquire(self, name: str, timeout=None, lease=None) -> ClusterLockToken:
        """Take cluster lock ``name``, waiting up to ``timeout`` (None: forever); ``LockTimeout``
        names the holder. ``lease`` (default ``ClusterConfig.lock_lease``) bounds how long a
        holder that stops renewing keeps it."""
        key = self._key(name)
        wait = seconds(timeout, "timeout", allow_zero=True)
        lease_ns = self._lease(lease)
        budget = None if wait is None else wait + 10.0
        return self.client.call(self._acquire(name, key, wait, lease_ns), budget or 1e9)

    async def _acquire(self, name: str, key: str, wait: float | None, lease_ns: int) -> ClusterLockToken:
        from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError

        kv = self.client.kv
        deadline = None if wait is None else time.monotonic() + wait
        pause = RETRY_S[0]
        holder = "?"
        holding = secrets.randbits(63) | 1
        known = self._known.get(key)
        if known is not None and known[1] == 0:
            # This process released it last: free, unless someone wrote since (one round trip).
            try:
                return self._token(
                    name, key, await kv.update(key, self._body(lease_ns, holding), last=known[0]), holding
                )
            except KeyWrongLastSequenceError:
                pass
        while True:
            try:
                return self._token(name, key, await kv.create(key, self._body(lease_ns, holding)), holding)
            except KeyWrongLastSequenceError:
                pass  # held (or released, or just taken): look at the entry
            except APIError as exc:
                if exc.err_code not in WRONG_LAST_SEQUENCE:
                    raise
            try:
                entry = await kv.get(key)
            except KeyNotFoundError:
                continue  # deleted meanwhile: create again
            holder, until_ns, _ = _holding(entry.value)
            if until_ns < time.time_ns():  # released, or its lease is over
                try:
                    rev = await kv.update(key, self._body(lease_ns, holding), last=entry.revision)
                    return self._token(name, key, rev, holding)
                except KeyWrongLastSequenceError:
                    pass  # someone else took it first
            self.contended += 1
            if deadline is not None and time.monotonic() >= deadline:
                raise LockTimeout(
                    f"cluster lock {name!r} is held by {holder} (lease until {until_ns / 1e9:.3f}); "
                    f"not acquired within timeout={wait:g}s"
                )
            left = RETRY_S[1] if deadline is None else max(0.0, deadline - time.monotonic())
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, RETRY_S[1])

    def _token(self, name: str, key: str, rev: int, holding: int) -> ClusterLockToken:
        self.acquired += 1
        self._known[key] = (int(rev), holding)
        return ClusterLockToken(name, int(rev), holding, self.holder)

    async def _rewrite(self, token: ClusterLockToken, body: bytes, holding: int) -> None:
        """Replace the entry ``token`` holds with ``body`` (a renewal, or the released entry) by
        compare-and-set: at the revision this process last wrote (one round trip), else at the one
        read back after checking the token still holds it. ``StaleToken`` if it does not."""
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        kv, key = self.client.kv, self._key(token.name)
        known = self._known.get(key)
        if known is not None and known[1] == token.id:
            try:
                self._known[key] = (int(await kv.update(key, body, last=known[0])), holding)
                return
            except KeyWrongLastSequenceError:
                pass
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            raise self._stale(token) from None
        _, _, current = _holding(entry.value)
        if current != token.id:
            raise self._stale(token)
        try:
            self._known[key] = (int(await kv.update(key, body, last=entry.revision)), holding)
        except KeyWrongLastSequenceError:
            raise self._stale(token) from None

    def release(self, token: ClusterLockToken) -> None:
        """Release; ``StaleToken`` if the token no longer holds the lock (its lease ran out, or it
        was released already)."""
        self._check(token)
        self.client.call(self._rewrite(token, RELEASED, 0), 30.0)
        self._until.pop(token.id, None)

    def extend(self, token: ClusterLockToken, lease=None) -> ClusterLockToken:
        """Renew the lease from now; returns the token (unchanged); ``StaleToken`` if lost."""
        self._check(token)
        lease_ns = self._lease(lease)
        self.client.call(self._rewrite(token, self._body(lease_ns, token.id), token.id), 30.0)
        self._until[token.id] = time.time_ns() + lease_ns
        return token

    def _check(self, token: ClusterLockToken) -> None:
        """A token whose lease is over is stale, whether or not anyone took the lock since."""
        until = self._until.get(token.id)
        if until is None or until < time.time_ns():
            self._until.pop(token.id, None)
            raise self._stale(token)

    def _stale(self, token: ClusterLockToken) -> StaleToken:
        return StaleToken(
            f"cluster lock {token.name!r} (fence {token.fence}) is no longer held by this token: its lease "
            "ran out and another holder took it, or it was released"
        )

    def stats(self) -> dict:
        return {"acquired_here": self.acquired, "contended_here": self.contended}


def _holding(raw: bytes) -> tuple[str, int, int]:
    """(holder, lease end in wall ns, holding id) of a lock entry; an unreadable one is not ours
    to honour (lease over)."""
    try:
        info = json.loads(raw)
        return str(info["holder"]), int(info["until_ns"]), int(info["id"])
    except (ValueError, KeyError, TypeError):
        return "an unreadable entry", 0, 0


def holder_name(host: str | None, system: str) -> str:
    return f"{host or os.uname().nodename}/{system}/{os.getpid()}"
