"""Atomic operations on 64-bit words in shared memory, and the few other machine-level helpers.

This is the only module with ``@intrinsic`` / llvmlite code. Each intrinsic takes a 1-D C-contiguous
int64 (or uint64) array and an index, and emits one LLVM atomic instruction on that element. They do
**no bounds check**: callers are kernels that have validated the index against the layout.

On x86-64 an acquire load and a release store compile to plain ``mov`` instructions, CAS to
``lock cmpxchg`` and fetch-add to ``lock xadd``; the orderings cost nothing on the read side but
stop the compiler from moving loads and stores across them.
"""

from __future__ import annotations

import platform

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "i386")


def _word_pointer(context, builder, aryty, ary, idx):
    arystruct = context.make_array(aryty)(context, builder, ary)
    return cgutils.get_item_pointer(context, builder, aryty, arystruct, [idx], wraparound=False)


def _check_word_array(ary):
    if not isinstance(ary, types.Array) or ary.ndim != 1 or ary.dtype not in (types.int64, types.uint64):
        raise TypeError("atomics work on 1-D int64/uint64 arrays")


@intrinsic
def load_acquire(typingctx, ary, idx):
    """``ary[idx]`` with acquire ordering: later loads cannot move before it."""
    _check_word_array(ary)
    sig = ary.dtype(ary, types.intp)

    def codegen(context, builder, sig, args):
        ptr = _word_pointer(context, builder, sig.args[0], args[0], args[1])
        return builder.load_atomic(ptr, "acquire", 8)

    return sig, codegen


@intrinsic
def load_relaxed(typingctx, ary, idx):
    """``ary[idx]`` as a single untorn load with no ordering (statistics, hints)."""
    _check_word_array(ary)
    sig = ary.dtype(ary, types.intp)

    def codegen(context, builder, sig, args):
        ptr = _word_pointer(context, builder, sig.args[0], args[0], args[1])
        return builder.load_atomic(ptr, "monotonic", 8)

    return sig, codegen


@intrinsic
def store_release(typingctx, ary, idx, value):
    """``ary[idx] = value`` with release ordering: earlier loads and stores cannot move after it."""
    _check_word_array(ary)
    sig = types.void(ary, types.intp, ary.dtype)

    def codegen(context, builder, sig, args):
        ptr = _word_pointer(context, builder, sig.args[0], args[0], args[1])
        val = context.cast(builder, args[2], sig.args[2], sig.args[0].dtype)
        builder.store_atomic(val, ptr, "release", 8)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def cas(typingctx, ary, idx, expected, desired):
    """Compare-and-swap ``ary[idx]`` from ``expected`` to ``desired`` (sequentially consistent).

    Returns the value seen; the swap happened iff it equals ``expected``.
    """
    _check_word_array(ary)
    sig = ary.dtype(ary, types.intp, ary.dtype, ary.dtype)

    def codegen(context, builder, sig, args):
        dt = sig.args[0].dtype
        ptr = _word_pointer(context, builder, sig.args[0], args[0], args[1])
        exp = context.cast(builder, args[2], sig.args[2], dt)
        new = context.cast(builder, args[3], sig.args[3], dt)
        pair = builder.cmpxchg(ptr, exp, new, "seq_cst", "seq_cst")
        return builder.extract_value(pair, 0)

    return sig, codegen


@intrinsic
def fetch_add(typingctx, ary, idx, delta):
    """Atomically add ``delta`` to ``ary[idx]``; returns the value before the add."""
    _check_word_array(ary)
    sig = ary.dtype(ary, types.intp, ary.dtype)

    def codegen(context, builder, sig, args):
        dt = sig.args[0].dtype
        ptr = _word_pointer(context, builder, sig.args[0], args[0], args[1])
        val = context.cast(builder, args[2], sig.args[2], dt)
        return builder.atomic_rmw("add", ptr, val, "seq_cst")

    return sig, codegen


@intrinsic
def fence_acquire(typingctx):
    """Loads before the fence complete before loads and stores after it (seqlock reader side)."""
    sig = types.void()

    def codegen(context, builder, sig, args):
        builder.fence("acquire")
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def fence_release(typingctx):
    """Loads and stores before the fence complete before stores after it (seqlock writer side)."""
    sig = types.void()

    def codegen(context, builder, sig, args):
        builder.fence("release")
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def cpu_relax(typingctx):
    """A spin-wait hint (``pause`` on x86): saves power and frees the sibling hyper-thread."""
    sig = types.void()

    def codegen(context, builder, sig, args):
        if _X86:
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause"
            )
            builder.call(fn, [])
        else:
            builder.fence("seq_cst")
        return context.get_dummy_value()

    return sig, codegen


def _load_le(nbits):
    def impl(typingctx, ary, off):
        if not isinstance(ary, types.Buffer) or ary.dtype != types.uint8:
            raise TypeError("little-endian loads read uint8 buffers")
        sig = types.uint64(ary, types.intp)

        def codegen(context, builder, sig, args):
            aryty = sig.args[0]
            arystruct = context.make_array(aryty)(context, builder, args[0])
            ptr = cgutils.get_item_pointer(context, builder, aryty, arystruct, [args[1]], wraparound=False)
            wide = builder.bitcast(ptr, ir.IntType(nbits).as_pointer())
            value = builder.load(wide, align=1)  # any alignment: one unaligned load on x86
            return builder.zext(value, ir.IntType(64)) if nbits < 64 else value

        return sig, codegen

    return impl


# ``ary[off:off+8]`` (``+4``) as a little-endian unsigned integer, for hashing. No bounds check: the
# caller has checked ``off + 8 <= len(ary)``. (Little-endian hosts only, as the rest of nt-memory.)
load_u64_le = intrinsic(_load_le(64))
load_u32_le = intrinsic(_load_le(32))


@intrinsic
def copy_bytes(typingctx, dst, doff, src, soff, n):
    """Copy ``n`` bytes from ``src[soff:]`` to ``dst[doff:]`` (uint8 buffers, not overlapping) with
    LLVM's memcpy: a few moves for small sizes, libc's vectorised copy for large ones, instead of
    a byte loop. No bounds check: the caller has checked both ranges."""
    for b in (dst, src):
        if not isinstance(b, types.Buffer) or b.dtype != types.uint8:
            raise TypeError("copy_bytes copies between uint8 buffers")
    sig = types.void(dst, types.intp, src, types.intp, types.intp)

    def codegen(context, builder, sig, args):
        dty, _, sty, _, _ = sig.args
        dptr = cgutils.get_item_pointer(
            context, builder, dty, context.make_array(dty)(context, builder, args[0]), [args[1]], wraparound=False
        )
        sptr = cgutils.get_item_pointer(
            context, builder, sty, context.make_array(sty)(context, builder, args[2]), [args[3]], wraparound=False
        )
        cgutils.raw_memcpy(builder, dptr, sptr, args[4], 1)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def prefetch(typingctx, ary, idx):
    """Ask the CPU to bring the cache line of ``ary[idx]`` in (``prefetcht0`` on x86-64), so a batch
    overlaps the memory misses of its next items instead of paying them one after another. A hint:
    it never faults and changes no value, whatever the address; callers still bound ``idx``."""
    if not isinstance(ary, types.Array) or ary.ndim != 1:
        raise TypeError("prefetch works on 1-D arrays")
    sig = types.void(ary, types.intp)

    def codegen(context, builder, sig, args):
        arystruct = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, sig.args[0], arystruct, [args[1]], wraparound=False)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # read (0), keep in every cache level (locality 3), data cache (1)
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def mul128_fold64(typingctx, a, b):
    """The 128-bit product of two uint64 values, folded: low 64 bits xor high 64 bits (XXH3's
    building block). One ``mul`` on x86-64."""
    if a != types.uint64 or b != types.uint64:
        raise TypeError("mul128_fold64 takes two uint64 values")
    sig = types.uint64(types.uint64, types.uint64)

    def codegen(context, builder, sig, args):
        i128 = ir.IntType(128)
        i64 = ir.IntType(64)
        prod = builder.mul(builder.zext(args[0], i128), builder.zext(args[1], i128))
        low = builder.trunc(prod, i64)
        high = builder.trunc(builder.lshr(prod, ir.Constant(i128, 64)), i64)
        return builder.xor(low, high)

    return sig, codegen


def _address_view(dtype):
    arrty = types.Array(dtype, 1, "C")

    def impl(typingctx, addr, count):
        sig = arrty(types.int64, types.int64)

        def codegen(context, builder, sig, args):
            addr_v, n_v = args
            ary = context.make_array(arrty)(context, builder)
            data = builder.inttoptr(addr_v, context.get_value_type(types.CPointer(dtype)))
            itemsize = context.get_constant(types.intp, context.get_abi_sizeof(context.get_data_type(dtype)))
            context.populate_array(
                ary,
                data=data,
                shape=cgutils.pack_array(builder, [n_v]),
                strides=cgutils.pack_array(builder, [itemsize]),
                itemsize=itemsize,
                meminfo=None,
            )
            return ary._getvalue()

        return sig, codegen

    return impl


@intrinsic
def bytes_view(typingctx, buf):
    """A 1-D uint8 array over the bytes of ``buf`` (a Python ``bytes`` argument, or any 1-D uint8
    buffer), no copy and no owner: valid while the caller holds ``buf``. A kernel called with
    ``bytes`` and one called with views over addresses then share one compiled callee."""
    if not isinstance(buf, types.Buffer) or buf.ndim != 1 or buf.dtype != types.uint8:
        raise TypeError("bytes_view takes bytes or a 1-D uint8 buffer")
    arrty = types.Array(types.uint8, 1, "C")

    def codegen(context, builder, sig, args):
        src = context.make_array(buf)(context, builder, args[0])
        ary = context.make_array(arrty)(context, builder)
        one = context.get_constant(types.intp, 1)
        context.populate_array(
            ary,
            data=src.data,
            shape=src.shape,
            strides=cgutils.pack_array(builder, [one]),
            itemsize=one,
            meminfo=None,
        )
        return ary._getvalue()

    return arrty(buf), codegen


# A view over memory at an integer address (no copy, no ownership). This is how a kernel rebuilds
# its view of a segment from the base address that Python passes as a plain integer: an integer
# argument costs about half what an array argument costs to dispatch.
address_to_bytes = intrinsic(_address_view(types.uint8))
address_to_words = intrinsic(_address_view(types.int64))


def _clock_intrinsic(clock_id):
    def impl(typingctx):
        sig = types.int64()

        def codegen(context, builder, sig, args):
            i64 = ir.IntType(64)
            i32 = ir.IntType(32)
            ts_t = ir.LiteralStructType([i64, i64])
            fnty = ir.FunctionType(i32, [i32, ts_t.as_pointer()])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "clock_gettime")
            ts = cgutils.alloca_once(builder, ts_t)
            builder.call(fn, [ir.Constant(i32, clock_id), ts])
            sec = builder.load(cgutils.gep_inbounds(builder, ts, 0, 0))
            nsec = builder.load(cgutils.gep_inbounds(builder, ts, 0, 1))
            return builder.add(builder.mul(sec, ir.Constant(i64, 1_000_000_000)), nsec)

        return sig, codegen

    return impl


CLOCK_REALTIME = 0
CLOCK_REALTIME_COARSE = 5  # Linux: the last tick's time, about 5 ns to read instead of about 20

clock_ns = intrinsic(_clock_intrinsic(CLOCK_REALTIME))
clock_ns.__doc__ = """Wall-clock time in nanoseconds (``clock_gettime(CLOCK_REALTIME)``, served by the vDSO).

The same clock as Python's ``time.time_ns()``, so expiries computed on either side agree."""

coarse_clock_ns = intrinsic(_clock_intrinsic(CLOCK_REALTIME_COARSE))
coarse_clock_ns.__doc__ = """The wall clock as of the last scheduler tick: never ahead of :func:`clock_ns`
and behind it by at most one tick (``time.clock_getres(CLOCK_REALTIME_COARSE)``). Readers use it to
decide cheaply that an expiry is still far away, and read :func:`clock_ns` only when it is near."""
