"""The exception hierarchy of nt-memory.

Every error raised on purpose derives from :class:`NtMemoryError`. Families that mirror a builtin
also derive from it (``SegmentNotFound`` is a ``FileNotFoundError``, ``ConfigError`` a ``ValueError``,
``LockTimeout`` a ``TimeoutError``) so callers can catch either. Messages name the argument, the
value and the limit.
"""

from __future__ import annotations

from typing import NoReturn


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


class ClusterError(TierError):
    """The cluster tier (NATS JetStream) failed or refused: a server unreachable within its
    timeout, a bucket holding another application's data; the client's error is the cause."""


# What each kernel status a user can meet means (kernels/status.py holds the codes; this map is keyed by
# their names so that this module stays at the bottom of the layers): the class raised, what happened,
# and what to do. Every tier raises through :func:`raise_status`, as py-lmdb's ``_error_map`` does.
STATUS_ERRORS: dict[str, tuple[type[NtMemoryError], str, str]] = {
    "BUSY": (
        LockTimeout,
        "stayed busy past the spin budget",
        "a process is stalled inside a write (SIGSTOP?) or died there; retry, or run `nt-memory gc`",
    ),
    "CLOSED": (SegmentClosed, "is closed", "open the system again by name"),
    "CORRUPT": (
        CorruptSegment,
        "holds an impossible reference or header",
        "recreate the system; its storage_path keeps what was made durable",
    ),
    "FULL": (CapacityError, "is full and nothing could be evicted", "create the system with more room"),
    "JOURNAL_FULL": (
        CapacityError,
        "has a full write-behind journal",
        "the flusher is behind; wait for it or create the system with a larger journal_bytes",
    ),
    "KEY_TOO_LARGE": (ValueTooLarge, "refused a key over its limit", "use a shorter namespace or key"),
    "OUT_TOO_SMALL": (
        CorruptSegment,
        "holds a value larger than its own limit",
        "recreate the system; its storage_path keeps what was made durable",
    ),
    "VALUE_TOO_LARGE": (ValueTooLarge, "refused a value over its limit", "store a smaller value"),
}


def status_error(status: str, subject: str, detail: str = "") -> NtMemoryError:
    """The exception for kernel status ``status`` (its name in kernels/status.py) met by ``subject``
    (e.g. ``"L1 of system 'desk1'"``); ``detail`` names the argument, its value and the limit."""
    cls, meaning, hint = STATUS_ERRORS.get(
        status, (SegmentError, f"returned the unexpected status {status}", "report it as a bug")
    )
    return cls(f"{subject} {meaning}" + (f": {detail}" if detail else "") + f" ({hint})")


def raise_status(status: str, subject: str, detail: str = "") -> NoReturn:
    """Raise :func:`status_error`."""
    raise status_error(status, subject, detail)
