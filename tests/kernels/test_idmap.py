"""The latest-id map against a dict, under hypothesis: puts, replacements, deletes, growth."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from nt_memory.tiers.l2 import LatestIds

keys = st.binary(min_size=1, max_size=12)
ops = st.lists(st.tuples(st.sampled_from(["put", "pop"]), keys, st.integers(0, 1 << 40)), max_size=400)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_the_map_answers_as_a_dict_does(script):
    m, model = LatestIds(capacity=8), {}
    for op, kb, ident in script:
        if op == "put":
            m.put(kb, ident)
            model[kb] = ident
        else:
            m.pop(kb)
            model.pop(kb, None)
        assert m.live == len(model)
        assert m.used * 10 <= len(m.vals) * 7 + 10
    for kb, ident in model.items():
        assert m.get(kb) == ident
    assert m.get(b"never stored \xff") == -1


def test_it_grows_and_reuses_tombstones_without_growing_forever():
    m = LatestIds(capacity=16)
    for i in range(5000):
        m.put(b"k%d" % i, i)
    assert m.live == 5000 and all(m.get(b"k%d" % i) == i for i in range(0, 5000, 7))
    size = len(m.vals)
    for round_ in range(20):  # churn: delete and re-add the same keys
        for i in range(5000):
            m.pop(b"k%d" % i)
        for i in range(5000):
            m.put(b"k%d" % i, i + round_)
    assert len(m.vals) == size and m.live == 5000 and m.get(b"k42") == 42 + 19
    assert m.nbytes == 24 * size
