"""Handles never cross a fork.

A child made by ``os.fork()`` inherits the parent's mappings, its LMDB environments and its
member slot, but not its threads. Using any of them from the child would act in the parent's name
(take a lock as the parent's member, journal without a flusher, drop the parent's LMDB reader
slots), so every handle registers here with :func:`guard`: in the child each one is marked
closed, without touching shared memory, and its verbs raise :func:`forked_error` ("opened in pid
N: reopen by name"). Reopening by name in the child (or starting it with ``spawn``) is the fix.
"""

from __future__ import annotations

import ctypes
import os
import weakref
from typing import Protocol

from nt_memory.errors import SegmentClosed


class ForkAware(Protocol):
    def _forked(self) -> None:
        """Mark this handle closed in a forked child, touching nothing shared."""


_HANDLES: weakref.WeakSet = weakref.WeakSet()


def guard(handle: ForkAware) -> None:
    """Have ``handle._forked()`` called in every child forked from this process."""
    _HANDLES.add(handle)


def forked_error(what: str, pid: int) -> SegmentClosed:
    """The error a handle opened in ``pid`` raises in a forked child."""
    return SegmentClosed(f"{what} was opened in pid {pid}: reopen by name (this is a forked child, pid {os.getpid()})")


def keep_forever(obj: object) -> None:
    """Never free ``obj`` in this (forked) process: freeing an inherited LMDB environment or
    transaction would run ``mdb_env_close`` here and clear the parent's reader slots."""
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))


def _after_fork_in_child() -> None:
    for handle in list(_HANDLES):
        handle._forked()
    _HANDLES.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
