"""XXH3-64 (seed 0, the default secret) in nopython code: the hash of L1 keys, computed inside the
kernels so that one compiled call hashes and probes.

Written from xxHash's specification (``doc/xxhash_spec.md``) and checked against the ``xxhash``
package, which the pure-Python path uses, for every length class (tests/kernels/test_xxh3.py): a
key hashes alike whichever side computes it. Pure function of the bytes; any caller.
"""

import numpy as np

from nt_memory.kernels._jit import jit
from nt_memory.kernels.atomics import load_u32_le, load_u64_le, mul128_fold64

_SECRET = np.frombuffer(
    bytes.fromhex(
        "b8fe6c3923a44bbe7c01812cf721ad1cded46de9839097db7240a4a4b7b3671f"
        "cb79e64eccc0e578825ad07dccff7221b8084674f743248ee03590e6813a264c"
        "3c2852bb91c300cb88d0658b1b532ea371644897a20df94e3819ef46a9deacd8"
        "a8fa763fe39c343ff9dcbbc7c70b4f1d8a51e04bcdb45931c89f7ec9d9787364"
        "eac5ac8334d3ebc3c581a0fffa1363eb170ddd51b7f0da49d3165526 29d4689e"
        "2b16be587d47a1fc8ff8b8d17ad031ce45cb3a8f95160428afd7fbcabb4b407e".replace(" ", "")
    ),
    np.uint8,
).copy()
SECRET_BYTES = 192
STRIPES_PER_BLOCK = (SECRET_BYTES - 64) // 8
BLOCK_BYTES = 64 * STRIPES_PER_BLOCK

P32_1 = np.uint64(0x9E3779B1)
P32_2 = np.uint64(0x85EBCA77)
P32_3 = np.uint64(0xC2B2AE3D)
P64_1 = np.uint64(0x9E3779B185EBCA87)
P64_2 = np.uint64(0xC2B2AE3D27D4EB4F)
P64_3 = np.uint64(0x165667B19E3779F9)
P64_4 = np.uint64(0x85EBCA77C2B2AE63)
P64_5 = np.uint64(0x27D4EB2F165667C5)
PMX1 = np.uint64(0x165667919E3779F9)
PMX2 = np.uint64(0x9FB21C651E98DF25)


@jit(inline="always")
def _u64(b, off):
    return load_u64_le(b, off)


@jit(inline="always")
def _u32(b, off):
    return load_u32_le(b, off)


@jit(inline="always")
def _bswap64(x):
    r = np.uint64(0)
    for j in range(8):
        r = (r << np.uint64(8)) | ((x >> np.uint64(8 * j)) & np.uint64(0xFF))
    return r


@jit(inline="always")
def _bswap32(x):
    r = np.uint64(0)
    for j in range(4):
        r = (r << np.uint64(8)) | ((x >> np.uint64(8 * j)) & np.uint64(0xFF))
    return r


@jit(inline="always")
def _rotl64(x, r):
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


@jit(inline="always")
def _avalanche(x):
    x ^= x >> np.uint64(37)
    x *= PMX1
    return x ^ (x >> np.uint64(32))


@jit(inline="always")
def _avalanche_xxh64(x):
    x ^= x >> np.uint64(33)
    x *= P64_2
    x ^= x >> np.uint64(29)
    x *= P64_3
    return x ^ (x >> np.uint64(32))


@jit(inline="always")
def _mix16(b, off, soff):
    s = _SECRET
    return mul128_fold64(_u64(b, off) ^ _u64(s, soff), _u64(b, off + 8) ^ _u64(s, soff + 8))


@jit
def _short(b, n):
    s = _SECRET
    un = np.uint64(n)
    if n > 8:
        low = (_u64(s, 24) ^ _u64(s, 32)) ^ _u64(b, 0)
        high = (_u64(s, 40) ^ _u64(s, 48)) ^ _u64(b, n - 8)
        return _avalanche(un + _bswap64(low) + high + mul128_fold64(low, high))
    if n >= 4:
        combined = _u32(b, n - 4) | (_u32(b, 0) << np.uint64(32))
        value = (_u64(s, 8) ^ _u64(s, 16)) ^ combined
        value ^= _rotl64(value, 49) ^ _rotl64(value, 24)
        value *= PMX2
        value ^= (value >> np.uint64(35)) + un
        value *= PMX2
        return value ^ (value >> np.uint64(28))
    if n > 0:
        combined = (
            np.uint64(b[n - 1])
            | (un << np.uint64(8))
            | (np.uint64(b[0]) << np.uint64(16))
            | (np.uint64(b[n >> 1]) << np.uint64(24))
        )
        return _avalanche_xxh64((_u32(s, 0) ^ _u32(s, 4)) ^ combined)
    return _avalanche_xxh64(_u64(s, 56) ^ _u64(s, 64))


@jit
def _medium(b, n):
    acc = np.uint64(n) * P64_1
    if n <= 128:
        rounds = ((n - 1) >> 5) + 1
        for i in range(rounds - 1, -1, -1):
            acc += _mix16(b, i * 16, i * 32)
            acc += _mix16(b, n - i * 16 - 16, i * 32 + 16)
        return _avalanche(acc)
    for i in range(8):
        acc += _mix16(b, i * 16, i * 16)
    acc = _avalanche(acc)
    for i in range(8, n >> 4):
        acc += _mix16(b, i * 16, (i - 8) * 16 + 3)
    acc += _mix16(b, n - 16, 119)
    return _avalanche(acc)


@jit
def _accumulate(acc, b, off, soff):
    s = _SECRET
    for i in range(8):
        lane = _u64(b, off + 8 * i)
        value = lane ^ _u64(s, soff + 8 * i)
        acc[i ^ 1] += lane
        acc[i] += (value & np.uint64(0xFFFFFFFF)) * (value >> np.uint64(32))


@jit
def _scramble(acc):
    s = _SECRET
    for i in range(8):
        a = acc[i]
        a ^= a >> np.uint64(47)
        a ^= _u64(s, SECRET_BYTES - 64 + 8 * i)
        acc[i] = a * P32_1


@jit(allocates=True)  # its accumulator array
def _long(b, n):
    acc = np.empty(8, np.uint64)
    acc[0] = P32_3
    acc[1] = P64_1
    acc[2] = P64_2
    acc[3] = P64_3
    acc[4] = P64_4
    acc[5] = P32_2
    acc[6] = P64_5
    acc[7] = P32_1
    off = 0
    while n - off > BLOCK_BYTES:
        for k in range(STRIPES_PER_BLOCK):
            _accumulate(acc, b, off + 64 * k, 8 * k)
        _scramble(acc)
        off += BLOCK_BYTES
    last = n - off
    for k in range((last - 1) // 64):
        _accumulate(acc, b, off + 64 * k, 8 * k)
    _accumulate(acc, b, n - 64, SECRET_BYTES - 71)
    s = _SECRET
    result = np.uint64(n) * P64_1
    for i in range(4):
        result += mul128_fold64(acc[2 * i] ^ _u64(s, 11 + 16 * i), acc[2 * i + 1] ^ _u64(s, 19 + 16 * i))
    return _avalanche(result)


@jit
def xxh3_64(b, n):
    """XXH3-64 of the first ``n`` bytes of ``b`` (a uint8 array or bytes), as uint64."""
    if n <= 16:
        return _short(b, n)
    if n <= 240:
        return _medium(b, n)
    return _long(b, n)
