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
