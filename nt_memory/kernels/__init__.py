"""The numba kernels (DESIGN.md §2). Every module here but :mod:`nt_memory.kernels.layout` compiles
with numba, so importing one imports numba: about 150 ms warm, seconds on a cold disk. Code that an
observer runs (``nt-memory ls`` and ``inspect`` read shared words and call no kernel) reaches the
kernels through :class:`lazy` and their constants through :mod:`nt_memory.kernels.layout`, so a
process that never calls a kernel never imports numba."""

from __future__ import annotations

import importlib
from typing import Any


class lazy:  # noqa: N801  # reads as the module it stands for: ``W = lazy("words")``
    """A kernel module imported on the first use of one of its names: ``W = lazy("words")`` at
    import time, ``W.store_words(...)`` when a kernel is needed. Each name is looked up once, then
    read from the instance like a module's. Thread-safe: the import system runs a module's first
    import once and makes other threads wait for it."""

    def __init__(self, module: str) -> None:
        self._module = f"{__name__}.{module}"

    def __getattr__(self, name: str) -> Any:
        value = getattr(importlib.import_module(self._module), name)
        setattr(self, name, value)
        return value

    def __repr__(self) -> str:
        return f"<kernels {self._module}, imported on first use>"
