"""Sleeping on a word in shared memory until another process changes it: Linux futexes.

``futex_wait(addr, expected, timeout)`` sleeps while the 32-bit word at ``addr`` still equals
``expected`` (the kernel checks atomically, so a wake between the caller's check and the sleep is
never lost); ``futex_wake(addr)`` wakes every sleeper. Shared (not PRIVATE) futexes work across
processes that map the same file. ctypes releases the GIL for the call. Elsewhere than Linux the
wait degrades to a short sleep, which is correct but slower.
"""

from __future__ import annotations

import ctypes
import platform
import sys
import time

from nt_memory.native import fast

_SYS_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98}.get(platform.machine().lower())
_FUTEX_WAIT = 0
_FUTEX_WAKE = 1
_INT_MAX = 0x7FFFFFFF


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


if sys.platform.startswith("linux") and _SYS_FUTEX is not None:
    _libc = ctypes.CDLL(None, use_errno=True)
    _syscall = _libc.syscall
    _syscall.restype = ctypes.c_long
    AVAILABLE = True
else:  # pragma: no cover - Linux is the supported platform
    AVAILABLE = False


def futex_wait(addr: int, expected: int, timeout: float | None) -> None:
    """Sleep until the word at ``addr`` changes from ``expected``, a wake, or ``timeout`` seconds
    (None: no limit). Spurious returns are allowed: callers re-check their condition."""
    expected &= 0xFFFFFFFF
    if fast is not None:
        # The compiled extension: a raw syscall with the GIL released, no ctypes marshalling.
        fast.futex_wait(addr, expected, -1 if timeout is None else max(0, int(timeout * 1e9)))
        return
    if not AVAILABLE:
        time.sleep(min(timeout if timeout is not None else 0.001, 0.001))
        return
    if timeout is None:
        ts = None
    else:
        timeout = max(0.0, timeout)
        ts = ctypes.byref(_Timespec(int(timeout), int((timeout % 1) * 1e9)))
    # A signed 32-bit view of ``expected``: the syscall compares raw bits.
    val = expected - (1 << 32) if expected >= 1 << 31 else expected
    _syscall(_SYS_FUTEX, ctypes.c_void_p(addr), _FUTEX_WAIT, val, ts, None, 0)


def futex_wake(addr: int, count: int = _INT_MAX) -> None:
    """Wake up to ``count`` processes sleeping on the word at ``addr`` (default: every one)."""
    if fast is not None:
        fast.futex_wake(addr, count)
    elif AVAILABLE:
        _syscall(_SYS_FUTEX, ctypes.c_void_p(addr), _FUTEX_WAKE, count, None, None, 0)
