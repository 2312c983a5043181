"""Waiting for a word in shared memory that another member holds: one policy for every lock.

Every internal lock of nt-memory is an *owned word* (kernels/lockword.py): 0 when free, the
holder's owner word (member slot + epoch) when held. Kernels spin on one for about a millisecond
and report BUSY; this module is what the Python side does next, the same way everywhere:

- a holder that is **dead** (its pid is gone, or the pid was reused, or its member slot moved on)
  is taken over: the caller steals the word (after repairing what the holder left, where the
  structure needs it);
- a holder that is **alive** is waited for, yielding the CPU and then sleeping in short, growing
  steps, up to a bounded time (:data:`STALL_TIMEOUT_S` unless the caller says otherwise);
- past that bound the wait raises :class:`LockTimeout` naming what was waited for, the holder's
  pid and its scheduler state ("stopped" for a SIGSTOPped process), so a stalled holder is
  reported instead of wedging its waiters.

No loop waiting on an owned word exists outside this module and the kernels' bounded spins.
"""

from __future__ import annotations

import os
import time
from typing import Any

from nt_memory.errors import LockTimeout
from nt_memory.kernels import Compiled, lazy

KO = lazy("lockword", globals())
KW = lazy("words", globals())

STALL_TIMEOUT_S = 2.0
_YIELDS = 50  # sched_yield()s before the first sleep: most holders are just preempted
_FIRST_SLEEP_S = 50e-6
_MAX_SLEEP_S = 5e-3

_STATES = {
    "R": "running",
    "S": "sleeping",
    "D": "in uninterruptible sleep",
    "T": "stopped",
    "t": "stopped by a tracer",
    "Z": "a zombie",
    "X": "dead",
    "I": "idle",
}


def process_state(pid: int) -> str:
    """The scheduler state of ``pid`` in words ("running", "stopped", ...), or "unknown"."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return "unknown"
    fields = stat[stat.rfind(b")") + 2 :].split()
    return _STATES.get(fields[0].decode(), fields[0].decode()) if fields else "unknown"


def process_runnable(pid: int) -> bool:
    """False when ``pid`` is stopped (SIGSTOP, a tracer) or a zombie: it cannot make progress."""
    return process_state(pid) not in ("stopped", "stopped by a tracer", "a zombie", "dead")


class BoundedWait:
    """One wait for an owned word, with the policy above. Create it at the first failed attempt
    and call :meth:`pause` after each further one; :meth:`holder_dead` says when to steal.

    ``system`` is the waiter's ``shm.system.System``; ``what`` names the lock in messages.
    """

    __slots__ = ("system", "what", "timeout", "deadline", "rounds")

    def __init__(self, system, what: str, timeout: float | None = None):
        self.system = system
        self.what = what
        self.timeout = STALL_TIMEOUT_S if timeout is None else timeout
        self.deadline = time.monotonic() + self.timeout
        self.rounds = 0

    def holder_dead(self, owner: int) -> bool:
        return owner != 0 and not self.system.owner_alive(owner)

    def pause(self, owner: int) -> None:
        """Wait a little longer for ``owner``; raise ``LockTimeout`` once the bound has passed."""
        if time.monotonic() >= self.deadline:
            raise self.timeout_error(owner)
        self.rounds += 1
        if self.rounds <= _YIELDS:
            os.sched_yield()
        else:
            time.sleep(min(_FIRST_SLEEP_S * (1 << min(self.rounds - _YIELDS, 10)), _MAX_SLEEP_S))

    def timeout_error(self, owner: int) -> LockTimeout:
        pid = self.system.members.owner_pid(owner) if owner else 0
        if pid:
            state = process_state(pid)
            who = f"pid {pid} ({state})"
        else:
            who = f"owner word {owner:#x} (no live member)" if owner else "a holder that keeps changing"
        return LockTimeout(
            f"{self.what} of system {self.system.name!r} stayed locked by {who} for {self.timeout:g}s"
            + ("; it will be released when that process continues or dies" if pid else "")
        )


class OwnedLock:
    """A Python-side critical section on an owned word (a control word of a shared structure).

    ``before_steal(dead_owner)``, if given, runs before a dead holder's word is taken over (to
    repair what it left half-done). Reentrant use by one thread is an error (it would wait for
    itself); other threads of the same process wait like other processes do.
    """

    __slots__ = ("system", "words", "idx", "what", "before_steal", "_addr")
    # The uncontended acquire and the release: compiled entries over the word's address (a
    # dispatch over the numpy array of words took ~1 us of the pair's ~1.3 us).
    _cas: Any = Compiled("words.word_cas", "INT", "INT", "INT")
    _store: Any = Compiled("words.word_store", "INT", "INT")

    def __init__(self, system, words, idx: int, what: str, before_steal=None):
        self.system = system
        self.words = words
        self.idx = idx
        self.what = what
        self.before_steal = before_steal
        if not 0 <= idx < len(words):
            raise IndexError(f"lock word {idx} lies outside its {len(words)} words")
        self._addr = words.ctypes.data + idx * 8

    def acquire(self, timeout: float | None = None) -> None:
        owner = self.system.owner
        if self._cas(self._addr, 0, owner) == 0:
            return
        wait = BoundedWait(self.system, self.what, timeout)
        while not KO.lockword_acquire(self.words, self.idx, owner):
            holder = int(self.words[self.idx])
            if wait.holder_dead(holder):
                if self.before_steal is not None:
                    self.before_steal(holder)
                if KO.lockword_steal(self.words, self.idx, holder, owner):
                    return
            else:
                wait.pause(holder)

    def release(self) -> None:
        self._store(self._addr, 0)  # a release store, as lockword_release

    def holder(self) -> int:
        return int(self.words[self.idx])

    def __enter__(self) -> OwnedLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
