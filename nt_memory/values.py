"""The types of what users store and pass: one place, so every signature says the same.

``Value`` is what ``put`` takes: ``bytes``, a numpy array, or anything JSON can carry (a mapping
with str keys or a sequence, whatever they hold: the codec checks their contents). ``get`` is typed
``Any``: what comes back is whatever was stored, which no signature can know (as redis-py and
diskcache type it); narrow it where it matters. ``Duration`` is every ``timeout``, ``ttl`` and
``lease``: seconds or a ``timedelta``.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np

# Containers hold Any: mypy infers {"qty": 10, "side": "buy"} as dict[str, object], which a
# recursive alias would refuse; the codec checks what is inside at run time (CodecError).
JSON: TypeAlias = "None | bool | int | float | str | Sequence[Any] | Mapping[str, Any]"
Value: TypeAlias = "bytes | np.ndarray | JSON"
Duration: TypeAlias = "float | datetime.timedelta"
Key: TypeAlias = "str | bytes"

__all__ = ["JSON", "Duration", "Key", "Value"]
