"""Slow, obvious references that the kernels are checked against."""

from __future__ import annotations


class NaiveTable:
    """The L1 table as a dict of (namespace, key) -> value. Entries that the real table may evict
    are still listed here; ``may_be_evicted`` says whether a missing entry is allowed."""

    def __init__(self, may_be_evicted: bool):
        self.data: dict = {}
        self.may_be_evicted = may_be_evicted

    def put(self, ns, key, value):
        self.data[(ns, key)] = value

    def delete(self, ns, key) -> bool:
        return self.data.pop((ns, key), None) is not None

    def expire(self, ns, key):
        self.data.pop((ns, key), None)

    def get(self, ns, key):
        return self.data.get((ns, key))


class NaiveRing:
    """The broadcast ring as a list of published messages with their byte positions: a deque that
    counts laps. A record takes ``record_bytes(8 + len)`` bytes and never straddles the end (it
    starts the next lap instead); a receiver more than a capacity behind the tail was lapped and
    resumes at the newest message, dropping the ones in between."""

    def __init__(self, capacity: int, record_bytes):
        self.capacity = capacity
        self.record_bytes = record_bytes
        self.tail = 0
        self.records: list[tuple[int, int, bytes]] = []  # (position, end, message); index = number

    def publish(self, msg: bytes) -> int:
        need = self.record_bytes(8 + len(msg))
        off = self.tail % self.capacity
        if off + need > self.capacity:
            self.tail += self.capacity - off  # a pad record to the end of the lap
        self.records.append((self.tail, self.tail + need, msg))
        self.tail += need
        return len(self.records) - 1

    def receive(self, cursor: int) -> tuple[int, int, bytes] | None:
        """(message number, next cursor, message) for a receiver at ``cursor``, or None."""
        if cursor >= self.tail:
            return None
        if self.tail - cursor > self.capacity:
            cursor = self.records[-1][0]  # lapped: the newest
        for no, (pos, end, msg) in enumerate(self.records):
            if pos >= cursor:
                return no, end, msg
        return None


class NaiveArena:
    """The arena as a dict of live references -> (offset, block bytes, payload written)."""

    def __init__(self):
        self.live: dict[int, tuple[int, int, bytes]] = {}

    def overlaps(self, off: int, size: int) -> bool:
        return any(off < o + s and o < off + size for o, s, _ in self.live.values())

    def used_bytes(self) -> int:
        return sum(s for _, s, _ in self.live.values())


class NaiveLock:
    """One named lock: its holder, the last fence issued, whether the holder's lease has run out,
    and the limit fences may not pass."""

    def __init__(self, limit: int):
        self.holder = 0
        self.fence = 0
        self.lease_over = False
        self.limit = limit

    def try_acquire(self, owner: int, expired_lease: bool) -> str | int:
        if self.holder:
            return "BUSY"
        if self.fence + 1 > self.limit:
            return "RESERVE"
        self.fence += 1
        self.holder, self.lease_over = owner, expired_lease
        return self.fence

    def take_over(self, owner: int) -> str | int:
        if not self.holder:
            return "BUSY"
        if self.fence + 1 > self.limit:
            self.holder = 0  # the kernel releases the stolen word when it may not issue a fence
            return "RESERVE"
        self.fence += 1
        self.holder, self.lease_over = owner, False
        return self.fence

    def release(self, owner: int, fence: int) -> str:
        if self.holder != owner or self.fence != fence:
            return "STALE"
        self.holder = 0
        return "STALE" if self.lease_over else "OK"
