"""``scope="cluster"`` locks: one key per lock in the swarm's bucket, taken by compare-and-set.

Acquiring creates ``l.<name>`` only if it is absent (or deleted), or replaces a holder whose lease
has ended, both conditional on the revision read; the token's fence is the revision of that
write. Revisions are the bucket's stream sequence, so fences grow across hosts and across server
restarts. The entry names its holder and a random id the token carries; renewal and release read
it, check the id and the lease, and write conditional on the revision read, so a holder whose
lease ran out (replaced or not) gets :class:`StaleToken`. A token never changes (as a local
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

    def _key(self, name: str) -> str:
        if not isinstance(name, str) or not name or len(name.encode()) > 1024:
            raise ConfigError(f"lock name {name!r} must be a non-empty str of at most 1024 UTF-8 bytes")
        return encode_key(LOCK_KEY_PREFIX, name.encode())

    def _body(self, lease_ns: int, holding: int) -> bytes:
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
        holding = secrets.randbits(63)
        body = self._body(lease_ns, holding)
        while True:
            try:
                rev = await kv.create(key, body)
                return self._token(name, rev, holding)
            except KeyWrongLastSequenceError:
                pass  # held (or just taken): look at the holder
            except APIError as exc:
                if exc.err_code not in WRONG_LAST_SEQUENCE:
                    raise
            try:
                entry = await kv.get(key)
            except KeyNotFoundError:
                continue  # released meanwhile: create again
            holder, until_ns, _ = _holding(entry.value)
            if until_ns < time.time_ns():
                try:
                    body = self._body(lease_ns, holding)
                    rev = await kv.update(key, body, last=entry.revision)
                    return self._token(name, rev, holding)
                except KeyWrongLastSequenceError:
                    pass  # someone else took it over first
            self.contended += 1
            if deadline is not None and time.monotonic() >= deadline:
                raise LockTimeout(
                    f"cluster lock {name!r} is held by {holder} (lease until {until_ns / 1e9:.3f}); "
                    f"not acquired within timeout={wait:g}s"
                )
            left = RETRY_S[1] if deadline is None else max(0.0, deadline - time.monotonic())
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, RETRY_S[1])

    def _token(self, name: str, rev: int, holding: int) -> ClusterLockToken:
        self.acquired += 1
        return ClusterLockToken(name, int(rev), holding, self.holder)

    async def _held_revision(self, token: ClusterLockToken) -> int:
        """The lock entry's revision if ``token`` still holds it (its id, lease not over), else
        ``StaleToken``."""
        from nats.js.errors import KeyNotFoundError

        try:
            entry = await self.client.kv.get(self._key(token.name))
        except KeyNotFoundError:
            raise self._stale(token) from None
        _, until_ns, holding = _holding(entry.value)
        if holding != token.id or until_ns < time.time_ns():
            raise self._stale(token)
        return int(entry.revision)

    def release(self, token: ClusterLockToken) -> None:
        """Release; ``StaleToken`` if the token no longer holds the lock (lease ran out and
        another holder took it, or released already)."""
        self.client.call(self._release(token), 30.0)

    async def _release(self, token: ClusterLockToken) -> None:
        from nats.js.errors import APIError

        subject = f"$KV.{self.client.config.bucket}.{self._key(token.name)}"
        revision = await self._held_revision(token)
        headers = {"KV-Operation": "DEL", "Nats-Expected-Last-Subject-Sequence": str(revision)}
        try:
            await self.client.js.publish(subject, b"", headers=headers)
        except APIError as exc:
            if exc.err_code in WRONG_LAST_SEQUENCE:
                raise self._stale(token) from None
            raise

    def extend(self, token: ClusterLockToken, lease=None) -> ClusterLockToken:
        """Renew the lease from now; returns the token (unchanged); ``StaleToken`` if lost."""
        lease_ns = self._lease(lease)
        return self.client.call(self._extend(token, lease_ns), 30.0)

    async def _extend(self, token: ClusterLockToken, lease_ns: int) -> ClusterLockToken:
        from nats.js.errors import KeyWrongLastSequenceError

        revision = await self._held_revision(token)
        try:
            await self.client.kv.update(self._key(token.name), self._body(lease_ns, token.id), last=revision)
        except KeyWrongLastSequenceError:
            raise self._stale(token) from None
        return token

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
