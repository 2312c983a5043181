"""The L1 table against a plain dict, under hypothesis: never a wrong value, collisions forced."""

import time

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from nt_memory.shm.system import remove_system
from nt_memory.tiers.l1 import HotCache
from tests.conftest import unique_name
from tests.naive import NaiveTable

NAMESPACES = st.sampled_from(["a", "b", "agent_1"])
KEYS = st.text(alphabet="xyz01", min_size=1, max_size=6)
VALUES = st.one_of(
    st.binary(max_size=300),
    st.integers(),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=3),
)


class TableMachine(RuleBasedStateMachine):
    max_entries = 10_000
    hash_bits = 64

    @initialize()
    def create(self):
        self.name = unique_name("m")
        self.cache = HotCache.create(self.name, max_entries=self.max_entries, _hash_bits=self.hash_bits)
        self.model = NaiveTable(may_be_evicted=self.max_entries < 10_000)

    @rule(ns=NAMESPACES, key=KEYS, value=VALUES)
    def put(self, ns, key, value):
        self.cache.put(ns, key, value)
        self.model.put(ns, key, value)

    @rule(ns=NAMESPACES, key=KEYS)
    def delete(self, ns, key):
        removed = self.cache.delete(ns, key)
        expected = self.model.delete(ns, key)
        if not self.model.may_be_evicted:
            assert removed == expected

    @rule(ns=NAMESPACES, key=KEYS, value=VALUES)
    def put_already_expired(self, ns, key, value):
        kb = self.cache.key_bytes(ns, key)
        from nt_memory.tiers.codec import encode

        self.cache.put_encoded(kb, self.cache.hash_bytes(kb), encode(value), time.time_ns() - 1)
        self.model.expire(ns, key)

    @rule(ns=NAMESPACES, key=KEYS)
    def get(self, ns, key):
        got = self.cache.get(ns, key)
        expected = self.model.get(ns, key)
        if got is None and self.model.may_be_evicted:
            return
        assert got == expected, f"{ns}/{key}: got {got!r}, expected {expected!r}"

    @precondition(lambda self: hasattr(self, "cache"))
    @rule()
    def rehash(self):
        self.cache.rehash()

    @invariant()
    def agrees_with_model(self):
        if not hasattr(self, "cache"):
            return
        live = 0
        for (ns, key), value in self.model.data.items():
            got = self.cache.get(ns, key)
            if got is None and self.model.may_be_evicted:
                continue
            assert got == value
            live += 1
        assert len(self.cache) <= self.cache.max_entries
        if not self.model.may_be_evicted:
            assert live == len(self.model.data)

    def teardown(self):
        if hasattr(self, "cache"):
            self.cache.close()
            remove_system(self.name)


class CollidingTable(TableMachine):
    """A 3-bit hash: almost every key collides with another; full key comparison must hold."""

    hash_bits = 3


class EvictingTable(TableMachine):
    """Capacity 8 with colliding hashes: eviction, tombstones and rehash all the time."""

    max_entries = 8
    hash_bits = 5


_settings = settings(max_examples=40, stateful_step_count=60, deadline=None)
TestTable = TableMachine.TestCase
TestTable.settings = _settings
TestCollidingTable = CollidingTable.TestCase
TestCollidingTable.settings = _settings
TestEvictingTable = EvictingTable.TestCase
TestEvictingTable.settings = _settings
