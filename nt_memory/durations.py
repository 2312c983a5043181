"""Durations as callers write them, turned into what the kernels use: one set of rules everywhere.

Every ``timeout``, ``ttl`` and ``lease`` of the public API goes through :func:`seconds` (or
:func:`expiry_ns` / :func:`duration_ns`): a number of seconds (``int`` or ``float``, numpy scalars
included) or a ``datetime.timedelta``; ``None`` or ``math.inf`` means "no limit" where a limit is
optional. NaN, negative values, ``bool`` and other types are refused with a :class:`ConfigError`
that names the argument; a finite value past :data:`MAX_SECONDS` (about 290 years, the int64
nanosecond clock's range) is refused too instead of overflowing.
"""

from __future__ import annotations

import datetime
import math
import numbers

from nt_memory.errors import ConfigError

MAX_SECONDS = 9.0e9  # int64 nanoseconds since 1970 run out in 2262: keep every deadline inside


def seconds(value: object, name: str, *, allow_none: bool = True, allow_zero: bool = False) -> float | None:
    """``value`` as seconds (float), or None for no limit (``None`` or ``inf``, when allowed)."""
    if value is None:
        if allow_none:
            return None
        raise ConfigError(f"{name} must be a number of seconds or a timedelta, got None")
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(
            f"{name} must be a number of seconds or a timedelta{' (or None)' if allow_none else ''}, "
            f"got {type(value).__name__} {value!r}"
        )
    value = float(value)
    if math.isnan(value):
        raise ConfigError(f"{name}=nan is not a duration")
    if value == math.inf:
        if allow_none:
            return None
        raise ConfigError(f"{name}=inf: this duration must be finite")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name}={value!r} must be {bound} seconds")
    if value > MAX_SECONDS:
        raise ConfigError(f"{name}={value:g} s is past the limit of {MAX_SECONDS:g} s; pass None for no limit")
    return value


def duration_ns(value: object, name: str, *, allow_zero: bool = False) -> int:
    """A duration in nanoseconds; 0 when there is none (``None`` / ``inf``)."""
    s = seconds(value, name, allow_zero=allow_zero)
    return 0 if s is None else max(1, int(s * 1e9))


def expiry_ns(now_ns: int, value: object, name: str = "ttl") -> int:
    """The absolute wall-clock expiry ``value`` seconds after ``now_ns``; 0 = never."""
    d = duration_ns(value, name)
    return now_ns + d if d else 0
