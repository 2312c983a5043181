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
