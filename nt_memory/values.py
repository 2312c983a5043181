"""The types of what users store and pass: one place, so every signature says the same.

``Value`` is what ``put`` takes and ``get`` returns: ``bytes``, a numpy array, or anything JSON can
carry. ``Duration`` is every ``timeout``, ``ttl`` and ``lease``: seconds or a ``timedelta``.
"""

from __future__ import annotations

import datetime
from typing import TypeAlias

import numpy as np

JSON: TypeAlias = "None | bool | int | float | str | list[JSON] | dict[str, JSON]"
Value: TypeAlias = "bytes | np.ndarray | JSON"
Duration: TypeAlias = "float | datetime.timedelta"
Key: TypeAlias = "str | bytes"

__all__ = ["JSON", "Duration", "Key", "Value"]
