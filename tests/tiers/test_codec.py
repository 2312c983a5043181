import numpy as np
import pytest

from nt_memory.errors import CodecError
from nt_memory.tiers.codec import TAG_ARRAY, array_data_offset, decode, encode


@pytest.mark.parametrize(
    "value",
    [b"", b"\x00\xff" * 10, {"a": [1, 2.5, None, True]}, "text ✓", 7, 3.25, None, [1, "x"]],
)
def test_roundtrip(value):
    assert decode(encode(value)) == value


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(12, dtype=np.float64).reshape(3, 4),
        np.zeros((0, 3), np.int32),
        np.array(5, np.int16),
        np.arange(6, dtype=">u4"),
        np.array([(1, 2.0)], dtype=[("a", "<i4"), ("b", "<f8")]),
        np.arange(10)[::2],
    ],
)
def test_array_roundtrip_keeps_dtype_and_shape(arr):
    out = decode(encode(arr))
    assert out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


def test_array_data_is_aligned_and_found_from_njit():
    enc = np.frombuffer(encode(np.arange(3.0)), np.uint8)
    off = array_data_offset(enc)
    assert enc[0] == TAG_ARRAY and off % 8 == 0
    np.testing.assert_array_equal(enc[off:].view(np.float64), [0.0, 1.0, 2.0])


def test_zero_copy_view_is_read_only():
    view = decode(encode(np.arange(4)), copy=False)
    assert not view.flags.writeable


@pytest.mark.parametrize("bad", [object(), {1, 2}, np.array([object()]), lambda: 1])
def test_unstorable_values_raise_codec_error(bad):
    with pytest.raises(CodecError):
        encode(bad)


@pytest.mark.parametrize("raw", [b"", b"\x09abc", b"\x02\x01", b"\x03{not json"])
def test_damaged_values_raise_codec_error(raw):
    with pytest.raises(CodecError):
        decode(raw)


def test_json_is_compact_and_equals_the_standard_encoder():
    import json

    from nt_memory.tiers.codec import TAG_JSON

    for value in [{"i": 1, "px": 100.0, "side": "buy"}, ["é", {"☃": [None, True, 1e300]}], "x", 3, float("inf")]:
        raw = encode(value)
        assert raw[0] == TAG_JSON
        assert raw[1:] == json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def test_a_failed_json_encode_leaves_no_stale_circular_marks():
    """The per-thread C encoder is reused: a failed encode must not poison the next ones (an
    object freed inside a failed encode can give its address to the next value)."""
    for _ in range(200):
        loop: list = []
        loop.append(loop)
        with pytest.raises(CodecError, match="Circular"):
            encode(loop)
        with pytest.raises(CodecError, match="set"):
            encode([[1, 2], {"a": {1, 2}}])
        del loop
        assert decode(encode([[1], {"b": [2]}])) == [[1], {"b": [2]}]
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(CodecError):
        encode(deep)
    assert decode(encode({"after": [1]})) == {"after": [1]}


def test_threads_encode_one_shared_value_at_once():
    import threading

    value = {"k": [list(range(50)) for _ in range(50)]}
    want = encode(value)
    bad = []

    def run():
        for _ in range(300):
            if encode(value) != want:
                bad.append(1)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad
