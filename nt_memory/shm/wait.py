"""Sleeping on a word in shared memory until another process changes it: Linux futexes.

``futex_wait(addr, expected, timeout)`` sleeps while the 32-bit word at ``addr`` still equals
``expected`` (the kernel checks atomically, so a wake between the caller's check and the sleep is
never lost); ``futex_wake(addr)`` wakes every sleeper. Shared (not PRIVATE) futexes work across
processes that map the same file. ctypes releases the GIL for the call. Elsewhere than Linux the
wait degrades to a short sleep, which is correct but slower.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import platform
import sys
import threading
import time
from collections.abc import Generator, Sequence
from typing import TypeVar

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


# ------------------------------------------------------------------------------ event loops
#
# An event loop cannot sleep in futex_wait. One thread per process (the waker) sleeps instead, on
# every word some loop awaits at once (futex_waitv, Linux 5.16+: up to 128 words per call), and
# hands each change to the awaiting loop with ``call_soon_threadsafe``, which writes the loop's
# self-pipe: the wake-up reaches the loop through a file descriptor it watches. The waker never
# consumes anything (the coroutine re-checks its own condition in the loop's thread), so a
# cancelled wait loses nothing and leaves nothing behind but its removed watch.

_SYS_FUTEX_WAITV = {"x86_64": 449, "amd64": 449, "aarch64": 449, "arm64": 449}.get(platform.machine().lower())
_FUTEX2_SIZE_U32 = 0x02
_WAITV_MAX = 128
_CLOCK_MONOTONIC = 1
_POLL_S = 0.001  # without futex_waitv (or past 127 watched words): look every millisecond


class _FutexWaitv(ctypes.Structure):
    _fields_ = [
        ("val", ctypes.c_uint64),
        ("uaddr", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


def _load32(addr: int) -> int:
    return ctypes.c_uint32.from_address(addr).value


class Waker:
    """The process's waker thread (see above). ``watch(addr, expected, loop, fut)`` resolves ``fut``
    in ``loop`` once the 32-bit word at ``addr`` differs from ``expected`` (or a futex wake names
    it); ``unwatch`` forgets a watch, resolved or not. Thread-safe; the thread starts on first use
    and is a daemon (it never keeps a program alive)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watches: dict[int, tuple[int, int, object, object]] = {}
        self._next = 0
        self._ctl = ctypes.c_uint32(0)  # bumped (and woken) when the set of watches changes
        self._ctl_addr = ctypes.addressof(self._ctl)
        self._thread: threading.Thread | None = None
        self._pid = 0
        self.wakeups = 0  # resolutions handed to loops (for tests and stats)
        self.waitv = AVAILABLE and _SYS_FUTEX_WAITV is not None

    def watch(self, addr: int, expected: int, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None]) -> int:
        with self._lock:
            if self._thread is None or self._pid != os.getpid():  # first use, or a forked child
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="nt-memory-waker", daemon=True)
                self._thread.start()
            self._next += 1
            wid = self._next
            self._watches[wid] = (addr, expected & 0xFFFFFFFF, loop, fut)
        self._poke()
        return wid

    def unwatch(self, wid: int) -> None:
        with self._lock:
            self._watches.pop(wid, None)

    def _poke(self) -> None:
        self._ctl.value = (self._ctl.value + 1) & 0xFFFFFFFF
        futex_wake(self._ctl_addr)

    def _run(self) -> None:
        arr = (_FutexWaitv * _WAITV_MAX)()
        while True:
            with self._lock:
                ctl = self._ctl.value
                watches = list(self._watches.items())
            fired = [(wid, w) for wid, w in watches if _load32(w[0]) != w[1]]
            if fired:
                self._fire(fired)
                continue
            if not watches:
                futex_wait(self._ctl_addr, ctl, None)
                continue
            if not self.waitv or len(watches) >= _WAITV_MAX:
                futex_wait(self._ctl_addr, ctl, _POLL_S)
                continue
            arr[0].val, arr[0].uaddr, arr[0].flags = ctl, self._ctl_addr, _FUTEX2_SIZE_U32
            for i, (_wid, (addr, expected, _loop, _fut)) in enumerate(watches, 1):
                arr[i].val, arr[i].uaddr, arr[i].flags = expected, addr, _FUTEX2_SIZE_U32
            r = _syscall(_SYS_FUTEX_WAITV, arr, len(watches) + 1, 0, None, _CLOCK_MONOTONIC)
            if r < 0 and ctypes.get_errno() == 38:  # ENOSYS: a kernel before 5.16
                self.waitv = False
            elif r > 0:  # a wake on a watched word: hand it over even if the word is unchanged
                wid, w = watches[r - 1]
                self._fire([(wid, w)])

    def _fire(self, fired) -> None:
        with self._lock:
            for wid, _w in fired:
                self._watches.pop(wid, None)
        for _wid, (_addr, _exp, loop, fut) in fired:
            self.wakeups += 1
            try:
                loop.call_soon_threadsafe(_resolve, fut)
            except RuntimeError:
                pass  # that loop is closed: nobody awaits the watch any more


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


WAKER = Waker()


def futex_wait_any(words: Sequence[tuple[int, int]], timeout: float | None) -> None:
    """:func:`futex_wait` on several words at once: ``words`` is a sequence of ``(addr, expected)``;
    returns once any differs from its expected value, on a wake of any, or after ``timeout``
    seconds (None: no limit). Spurious returns are allowed."""
    if len(words) == 1:
        futex_wait(words[0][0], words[0][1], timeout)
        return
    if not WAKER.waitv or len(words) > _WAITV_MAX:
        time.sleep(_POLL_S if timeout is None else min(_POLL_S, max(0.0, timeout)))
        return
    arr = (_FutexWaitv * len(words))()
    for i, (addr, expected) in enumerate(words):
        arr[i].val, arr[i].uaddr, arr[i].flags = expected & 0xFFFFFFFF, addr, _FUTEX2_SIZE_U32
    ts = None
    if timeout is not None:
        end = time.clock_gettime_ns(time.CLOCK_MONOTONIC) + max(0, int(timeout * 1e9))
        ts = ctypes.byref(_Timespec(end // 1_000_000_000, end % 1_000_000_000))
    if _syscall(_SYS_FUTEX_WAITV, arr, len(words), 0, ts, _CLOCK_MONOTONIC) < 0 and ctypes.get_errno() == 38:
        WAKER.waitv = False


async def wait_words_async(words: Sequence[tuple[int, int]], timeout: float | None) -> None:
    """:func:`futex_wait_any` for coroutines, never blocking the loop: returns once any of the
    ``(addr, expected)`` words changes, on a wake, or after ``timeout`` seconds. Callers re-check
    their condition. Cancelling it leaves nothing behind."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    wids = [WAKER.watch(addr, expected, loop, fut) for addr, expected in words]
    try:
        if timeout is None:
            await fut
        else:
            try:
                async with asyncio.timeout(max(0.0, timeout)):
                    await fut
            except TimeoutError:
                pass
    finally:
        for wid in wids:
            WAKER.unwatch(wid)


# A wait written once, slept two ways: a generator that checks its condition and yields
# ``(words, timeout)`` (``words``: ``(addr, expected)`` pairs) whenever it must sleep, and returns
# its result. ``run_sleeps`` sleeps in the calling thread (futex_wait / futex_waitv),
# ``arun_sleeps`` in the waker (coroutines). Leaving early (an exception, a cancellation) closes
# the generator, so its ``finally`` and ``except`` clauses run in either case.


T = TypeVar("T")
# A wait generator: yields (words, timeout) to sleep on, returns its result.
WaitSteps = Generator[tuple[Sequence[tuple[int, int]], "float | None"], None, T]


def run_sleeps(steps: WaitSteps[T]) -> T:
    """Drive a wait generator (see above) in this thread; its result."""
    try:
        while True:
            words, timeout = next(steps)
            futex_wait_any(words, timeout)
    except StopIteration as stop:
        return stop.value
    finally:
        steps.close()


async def arun_sleeps(steps: WaitSteps[T]) -> T:
    """Drive a wait generator with :func:`wait_words_async`, never blocking the loop; its result."""
    try:
        while True:
            words, timeout = next(steps)
            await wait_words_async(words, timeout)
    except StopIteration as stop:
        return stop.value
    finally:
        steps.close()
