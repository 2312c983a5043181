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
