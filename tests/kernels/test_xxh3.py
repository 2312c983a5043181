"""The numba XXH3-64 against the xxhash package (the oracle the pure-Python path uses)."""

import os

import numpy as np
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from nt_memory.kernels.xxh3 import xxh3_64


def ours(data: bytes) -> int:
    return int(xxh3_64(np.frombuffer(data, np.uint8), len(data)))


def test_every_length_up_to_three_blocks():
    rnd = np.random.default_rng(3)
    for n in range(0, 3 * 1024 + 70):
        data = rnd.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert ours(data) == xxhash.xxh3_64_intdigest(data), n


def test_long_inputs_and_block_edges():
    for n in (1023, 1024, 1025, 2048, 2049, 10_000, 65_536, 100_003):
        data = os.urandom(n)
        assert ours(data) == xxhash.xxh3_64_intdigest(data), n


def test_bytes_objects_hash_alike():
    data = b"agent_1\0position"
    assert int(xxh3_64(data, len(data))) == xxhash.xxh3_64_intdigest(data)


@settings(deadline=None, max_examples=500)
@given(st.binary(max_size=600))
def test_any_bytes(data):
    assert ours(data) == xxhash.xxh3_64_intdigest(data)
