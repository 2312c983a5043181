"""The exception hierarchy of nt-memory.

Every error raised on purpose derives from :class:`NtMemoryError`. Families that mirror a builtin
also derive from it (``SegmentNotFound`` is a ``FileNotFoundError``, ``ConfigError`` a ``ValueError``,
``LockTimeout`` a ``TimeoutError``) so callers can catch either. Messages name the argument, the
value and the limit.
"""

from __future__ import annotations


class NtMemoryError(Exception):
    """Root of every nt-memory error."""


class ConfigError(NtMemoryError, ValueError):
    """A configuration value or argument is invalid."""


class InvalidKey(NtMemoryError, TypeError, ValueError):
    """A namespace or key is of the wrong type or form (not str/bytes, empty, NUL in a namespace)."""


class InvalidEmbedding(NtMemoryError, ValueError):
    """An embedding of the wrong dimension or type, or with NaN/infinite components."""


class SegmentError(NtMemoryError):
    """A shared-memory segment cannot be created, attached or used."""


class SegmentNotFound(SegmentError, FileNotFoundError):
    """No segment (or system) of that name exists."""


class SegmentExists(SegmentError, FileExistsError):
    """A segment (or system) of that name already exists."""


class SystemAbandoned(SegmentError):
    """The system's creator died before finishing it: nothing in it is worth keeping."""


class SegmentNotOwned(SegmentError, PermissionError):
    """A segment of that name belongs to another user (or is not accessible to this one)."""


class LayoutMismatch(SegmentError):
    """The segment was made by another layout version or is of another kind."""


class CorruptSegment(SegmentError):
    """The segment's header or layout is damaged, truncated or foreign."""


class SegmentClosed(SegmentError):
    """The object was closed; its mapping is gone."""


class CapacityError(NtMemoryError):
    """Shared memory, the table or an arena is full."""


class ValueTooLarge(CapacityError, ValueError):
    """A key, value or message is larger than the configured limit."""


class LockTimeout(NtMemoryError, TimeoutError):
    """A lock (or a write stripe) could not be taken in time."""


class StaleToken(NtMemoryError):
    """A lock token no longer holds its lock (lease expired or taken over)."""


class ConsensusError(NtMemoryError):
    """A consensus operation was refused (unknown voter, repeat vote, ...)."""


class CodecError(NtMemoryError, TypeError):
    """A value cannot be encoded or decoded."""


class TierError(NtMemoryError):
    """A storage tier (hnswlib, LMDB) failed; the original error is the cause."""
