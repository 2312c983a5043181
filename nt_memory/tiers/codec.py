"""Values as bytes: one tag byte, then the payload. Never pickle.

========  ===========================================================================
tag       payload
========  ===========================================================================
0x01      raw ``bytes`` (``bytearray`` and ``memoryview`` are stored as bytes)
0x02      numpy array: u16 data offset | u8 ndim | pad | u64 shape[ndim] | dtype descr (ASCII:
          ``dtype.str``, or JSON for structured dtypes) | zero pad to 8 | data (C order)
0x03      JSON (UTF-8) of any JSON-able object (dict, list, str, int, float, bool, None);
          tuples come back as lists
========  ===========================================================================

Array data starts on an 8-byte boundary of the value, and values start on a 16-byte boundary in
the arena, so a reader (``@njit`` code included, see :func:`array_data_offset`) can view the data
in place. Object arrays are refused: storing them would need pickle, and a process that can write
the segment must never be able to make a reader execute code.
"""

from __future__ import annotations

import json
import math
import struct
import threading

import numpy as np

from nt_memory.errors import CodecError
from nt_memory.kernels import on_first_use
from nt_memory.native import fast

TAG_BYTES = 0x01
TAG_ARRAY = 0x02
TAG_JSON = 0x03
TAGS = {TAG_BYTES: "bytes", TAG_ARRAY: "ndarray", TAG_JSON: "json"}

_ARRAY_FIXED = 4  # tag, u16 data offset, ndim
if fast is not None:
    fast.set_json_loads(json.loads)  # the compiled getters parse JSON values with it directly
_ARRAY_HEAD = struct.Struct("<HB")
_BYTES_TAG = bytes([TAG_BYTES])
_JSON_TAG = bytes([TAG_JSON])


class _JsonEncoders(threading.local):
    """Compact JSON, encoded by CPython's C encoder made once per thread (``json.dumps`` with any
    non-default argument builds a JSONEncoder and a C encoder on every call: 2.8 us against
    1.4 us for a three-key dict). Per thread: the C encoder keeps the objects it is inside in
    its ``markers`` dict (the circular-reference check), which two threads must not share."""

    def __init__(self):
        enc = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
        make = getattr(json.encoder, "c_make_encoder", None)
        self.markers: dict = {}  # cleared after a failed encode, which can leave entries behind
        if make is None:  # an interpreter without the C accelerator
            self.encode = enc.encode
            return
        c_encode = make(self.markers, enc.default, json.encoder.encode_basestring, None, ":", ",", False, False, True)
        join = "".join
        self.encode = lambda value: join(c_encode(value, 0))


_json = _JsonEncoders()


def encode(value) -> bytes:
    """Encode ``value`` with its tag. Raises :class:`CodecError` naming the type it cannot store."""
    t = type(value)
    if t is bytes:
        return _BYTES_TAG + value
    if t is np.ndarray or isinstance(value, np.ndarray):
        return _encode_array(value)
    if t is bytearray or t is memoryview:
        return _BYTES_TAG + bytes(value)
    try:
        return _JSON_TAG + _json.encode(value).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        _json.markers.clear()
        raise CodecError(
            f"cannot store a value of type {t.__name__}: use bytes, a numpy array or a JSON-able object ({exc})"
        ) from None


def _encode_array(arr: np.ndarray) -> bytes:
    if arr.dtype.hasobject:
        raise CodecError(f"cannot store a numpy array of dtype {arr.dtype}: object arrays would need pickle")
    if arr.ndim > 32:
        raise CodecError(f"cannot store a numpy array with {arr.ndim} dimensions (limit 32)")
    if arr.dtype.fields is None and arr.dtype.subdtype is None:
        descr = arr.dtype.str.encode("ascii")
    else:
        descr = b"J" + json.dumps(np.lib.format.dtype_to_descr(arr.dtype)).encode("ascii")
    head = _ARRAY_FIXED + 8 * arr.ndim + len(descr)
    data_off = (head + 7) // 8 * 8
    if data_off > 0xFFFF:
        raise CodecError(f"cannot store a numpy array whose dtype description is {len(descr)} bytes long")
    prefix = bytearray(data_off)
    prefix[0] = TAG_ARRAY
    prefix[1:3] = data_off.to_bytes(2, "little")
    prefix[3] = arr.ndim
    prefix[_ARRAY_FIXED : _ARRAY_FIXED + 8 * arr.ndim] = np.asarray(arr.shape, dtype="<u8").tobytes()
    prefix[_ARRAY_FIXED + 8 * arr.ndim : head] = descr
    return bytes(prefix) + np.ascontiguousarray(arr).tobytes()


def decode(buf, copy: bool = True):
    """Decode an encoded value (``bytes`` or a ``memoryview`` of one).

    With ``copy=False`` an array is returned as a read-only view into ``buf`` (zero-copy), valid as
    long as ``buf`` is.
    """
    if len(buf) == 0:
        raise CodecError("cannot decode an empty value (no tag byte)")
    tag = buf[0]
    if tag == TAG_BYTES:
        return bytes(buf[1:])
    if tag == TAG_JSON:
        try:
            return json.loads(bytes(buf[1:]))
        except ValueError as exc:
            raise CodecError(f"stored JSON value is damaged: {exc}") from None
    if tag == TAG_ARRAY:
        return _decode_array(buf, copy)
    raise CodecError(f"unknown value tag 0x{tag:02x}")


_DTYPES: dict[bytes, np.dtype] = {}
_DTYPES_LIMIT = 1024


def _dtype_of(descr: bytes) -> np.dtype:
    dtype = _DTYPES.get(descr)
    if dtype is not None:
        return dtype
    try:
        if descr.startswith(b"J"):
            dtype = np.lib.format.descr_to_dtype(_tuplify(json.loads(descr[1:])))
        else:
            dtype = np.dtype(descr.decode("ascii"))
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise CodecError(f"stored array dtype {descr!r} is not understood: {exc}") from None
    if dtype.hasobject:
        raise CodecError("stored array has an object dtype: refused")
    if len(_DTYPES) < _DTYPES_LIMIT:
        _DTYPES[descr] = dtype
    return dtype


def _decode_array(buf, copy: bool) -> np.ndarray:
    if len(buf) < _ARRAY_FIXED:
        raise CodecError("stored array value is truncated")
    data_off, ndim = _ARRAY_HEAD.unpack_from(buf, 1)
    head = _ARRAY_FIXED + 8 * ndim
    if not head <= data_off <= len(buf):
        raise CodecError("stored array header is damaged")
    shape = struct.unpack_from(f"<{ndim}Q", buf, _ARRAY_FIXED)
    dtype = _dtype_of(bytes(buf[head:data_off]).rstrip(b"\0"))
    count = math.prod(shape)
    if data_off + count * dtype.itemsize != len(buf):
        raise CodecError(
            f"stored array has {len(buf) - data_off} data bytes, shape {shape} needs {count * dtype.itemsize}"
        )
    arr = np.frombuffer(buf, dtype=dtype, count=count, offset=data_off).reshape(shape)
    if copy:
        return arr.copy()
    arr.flags.writeable = False
    return arr


def _tuplify(descr):
    if isinstance(descr, list):
        return [tuple(_tuplify(x) for x in item) if isinstance(item, list) else item for item in descr]
    return descr


def _array_data_offset(buf):
    """In ``@njit`` code: where an encoded array's data starts in ``buf`` (a uint8 array holding
    the encoded value), or -1 if ``buf`` does not hold an array. View it with
    ``buf[off:n].view(np.float64)`` (``n`` the value length)."""
    if len(buf) < _ARRAY_FIXED or buf[0] != TAG_ARRAY:
        return -1
    return np.int64(buf[1]) | (np.int64(buf[2]) << 8)


# ``array_data_offset``: compiled on first use, so that importing the codec does not import numba.
__getattr__ = on_first_use(globals(), array_data_offset=_array_data_offset)
