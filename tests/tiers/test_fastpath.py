"""The compiled fast path answers exactly as the pure-Python path does, edge cases included.

Both paths run on the same table: the compiled ``get``/``put`` of a handle against the Python
closures it falls back to. (CI also runs the whole suite with NT_MEMORY_PURE=1.)"""

from __future__ import annotations

import numpy as np
import pytest

from nt_memory import native
from nt_memory.errors import InvalidKey, SegmentClosed, ValueTooLarge
from nt_memory.tiers.l1 import HotCache

pytestmark = pytest.mark.skipif(native.fast is None, reason="the compiled extension is not built (pure path only)")

KEYS = [
    ("ns", "k"),
    ("ns", "ключ"),  # non-ASCII: UTF-8 bytes
    ("名前", "k"),
    (b"raw", b"bytes-key"),
    ("ns", b"\x00\xffbinary"),
    ("ns", "x" * 600),  # longer than the C side's stack buffer
]
VALUES = [b"", b"v", b"\x00" * 100, {"a": [1, 2.5, None]}, "text", 7, np.arange(8, dtype=np.float64), b"x" * 5000]


@pytest.fixture
def pair(name):
    cache = HotCache.create(name, max_entries=256, max_key_bytes=1024)
    slow_get = cache._python_getter(cache._get_slow)
    slow_put = HotCache.put.__get__(cache)
    yield cache, slow_get, slow_put
    cache.close()
    cache.unlink()


def test_the_compiled_path_is_in_use(pair):
    cache, _, _ = pair
    assert type(cache.get).__name__ == "Getter" and type(cache.put).__name__ == "Putter"


def _same(a, b):
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("key", KEYS)
def test_every_value_reads_back_alike_through_both_paths(pair, key):
    cache, slow_get, slow_put = pair
    for v in VALUES:
        for put in (cache.put, slow_put):
            put(*key, v)
            assert _same(cache.get(*key), v) and _same(slow_get(*key), v), (key, v)
    assert cache.get(key[0], "absent") is None and cache.get(key[0], "absent", 5) == 5


@pytest.mark.parametrize(
    "ns, key, error",
    [
        ("", "k", InvalidKey),
        ("n\0s", "k", InvalidKey),
        ("ns", "", InvalidKey),
        (1, "k", InvalidKey),
        ("ns", 2.5, InvalidKey),
        ("ns", "y" * 2000, ValueTooLarge),
    ],
)
def test_bad_keys_raise_alike(pair, ns, key, error):
    cache, slow_get, slow_put = pair
    for call in (
        lambda: cache.get(ns, key),
        lambda: slow_get(ns, key),
        lambda: cache.put(ns, key, b"v"),
        lambda: slow_put(ns, key, b"v"),
    ):
        with pytest.raises(error):
            call()


def test_keyword_and_ttl_calls_take_the_python_path_and_work(pair):
    cache, _, _ = pair
    cache.put("ns", "t", b"v", ttl=60)
    cache.put("ns", "t2", b"v", 60)
    cache.put(ns="ns", key="t3", value=b"v")
    assert cache.get("ns", "t") == cache.get(ns="ns", key="t2") == cache.get("ns", "t3", default=None) == b"v"


def test_closed_handles_raise(name):
    cache = HotCache.create(name, max_entries=64)
    cache.put("ns", "k", b"v")
    get, put = cache.get, cache.put
    cache.close()
    try:
        with pytest.raises(SegmentClosed):
            get("ns", "k")
        with pytest.raises(SegmentClosed):
            put("ns", "k", b"v")
    finally:
        cache.unlink()


# ------------------------------------------------------------------------------------ batches


def test_a_batch_get_answers_as_single_gets_do_in_one_call(pair):
    """Every kind of value, absent keys, values bigger than the copy buffer and more of them than
    one round of it holds: the compiled batch answers what ``get`` answers for each key."""
    cache, _, _ = pair
    keys = []
    for ns, key in KEYS:
        for j, v in enumerate(VALUES):
            k = key + (f"{j}" if isinstance(key, str) else str(j).encode())
            cache.put(ns, k, v)
            keys.append((ns, k))
    for i in range(40):  # 40 x 5 KB: past the batch's 64 KiB copy buffer, so several rounds
        cache.put("ns", f"big{i}", bytes([i]) * 5000)
    for ns in {ns for ns, _ in keys}:
        batch = [k for n, k in keys if n == ns] + ["absent"]
        if ns == "ns":
            batch += [f"big{i}" for i in range(40)]
        got = cache.get.many(ns, batch, "dflt")  # the compiled batch itself: never the slow path here
        assert got is not None and len(got) == len(batch)
        for k, v in zip(batch, got, strict=True):
            assert _same(v, cache.get(ns, k, "dflt")), (ns, k)
        assert all(_same(a, b) for a, b in zip(cache.get_many(ns, tuple(batch), "dflt"), got, strict=True))
    assert cache.get_many("ns", []) == [] and cache.get_many("ns", iter(["big1"])) == [b"\x01" * 5000]


def test_a_batch_with_a_bad_key_raises_as_get_does_and_stores_nothing(pair):
    cache, _, _ = pair
    cache.put("ns", "k", b"v")
    assert cache.get.many("ns", ["k", 5]) is None  # not the compiled path's to answer...
    with pytest.raises(InvalidKey):
        cache.get_many("ns", ["k", 5])  # ...and the slow path raises as get would
    with pytest.raises(ValueTooLarge):
        cache.get_many("ns", ["k", "y" * 2000])
    assert cache.put.many("ns", [("a", b"1"), ("b", 2)], 0) == -1  # a non-bytes value: nothing stored
    assert cache.get("ns", "a") is None
    with pytest.raises(InvalidKey):
        cache.put_many("ns", [("a", b"1"), ("", b"2")])
    assert cache.put.many("ns", [("a", b"1"), ("b", b"2")], 0) == 2
    assert cache.get_many("ns", ["a", "b"]) == [b"1", b"2"]


def test_a_batch_put_stores_in_order_and_the_rest_goes_on_after_a_partial_batch(name, tmp_path):
    """A journal too small for the whole batch: the compiled call stores what fits, the Python
    path waits for the flusher and stores the rest; every value reaches LMDB in order."""
    from nt_memory import CacheConfig, MemoryConfig, MemorySystem

    cfg = MemoryConfig(
        name=name, storage_path=str(tmp_path), journal_bytes=1 << 20, cache_config=CacheConfig(max_entries=8192)
    )
    with MemorySystem.open(cfg) as mem:
        items = [(f"k{i}", bytes([i % 256]) * 900) for i in range(1500)]  # 1.4 MB through a 1 MiB journal
        mem.flush()
        done = mem.l1.put_batch(mem.put, "ns", items, 0)  # the compiled batch alone: the journal fills
        assert 0 < done < len(items)
        assert mem.put_many("ns", items) == 1500  # the same through the facade: the rest after a wait
        items[5] = ("k5", b"last")  # a repeated key: the later value wins, as in order
        assert mem.put_many("ns", [items[5]]) == 1
        assert mem.get_many("ns", [k for k, _ in items]) == [v for _, v in items]
        mem.flush()
        mem.unlink()  # what a reboot does to shared memory: every value from LMDB below
    with MemorySystem.open(cfg) as mem:
        assert mem.get_many("ns", [k for k, _ in items]) == [v for _, v in items]
        mem.unlink()
