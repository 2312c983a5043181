"""The numba kernels (DESIGN.md §2). Every module here but :mod:`nt_memory.kernels.layout` compiles
with numba, so importing one imports numba: about 150 ms warm, seconds on a cold disk. Code that an
observer runs (``nt-memory ls`` and ``inspect`` read shared words and call no kernel) reaches the
kernels through :class:`lazy` and their constants through :mod:`nt_memory.kernels.layout`, so a
process that never calls a kernel never imports numba."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


class lazy:  # noqa: N801  # reads as the module it stands for: ``KW = lazy("words", globals())``
    """A kernel module imported on the first use of one of its names: ``KW = lazy("words",
    globals())`` at import time, ``KW.store_words(...)`` when a kernel is needed. That first use
    also rebinds every global of ``namespace`` (the importing module's ``globals()``) that names
    this object to the module itself, so later loads are plain module attribute loads, CPython's
    fastest (an object with a ``__getattr__`` hook costs ~200 instructions more per load).
    Thread-safe: the import system runs a module's first import once and makes other threads wait
    for it."""

    def __init__(self, module: str, namespace: dict[str, Any]) -> None:
        self._module = f"{__name__}.{module}"
        self._namespace = namespace

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # a probe (copy, pickle, introspection) is not a use of a kernel
            raise AttributeError(name)
        module = importlib.import_module(self._module)
        for key, value in list(self._namespace.items()):
            if value is self:
                self._namespace[key] = module
        value = getattr(module, name)
        setattr(self, name, value)  # for a caller that kept this object itself
        return value

    def __repr__(self) -> str:
        return f"<kernels {self._module}, imported on first use>"


class Compiled:
    """A class attribute holding the compiled entry point of kernel ``"module.function"`` (a module
    of this package) for exactly ``arg_types``, the names of numba types in
    :mod:`nt_memory.kernels._jit` (``"INT"``, ``"BYTES"``...): compiled, or loaded from numba's
    cache, on first access, which then puts the entry in its place (see ``_jit.entry_point``). The
    first kernel a process loads brings in numba's compiler (about half a second), so a process
    that never calls one (an observer: ``nt-memory inspect``, ``top``) never pays; a class that
    must not pay on a first call reads its entries when an instance is made."""

    def __init__(self, kernel: str, *arg_types: str) -> None:
        self.kernel = kernel
        self.arg_types = arg_types
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        jit = importlib.import_module(f"{__name__}._jit")
        module, _, function = self.kernel.rpartition(".")
        dispatcher = getattr(importlib.import_module(f"{__name__}.{module}"), function)
        fn = jit.entry_point(dispatcher, *(getattr(jit, t) for t in self.arg_types))
        # A compiled entry is a builtin function: no descriptor, so an instance's lookup finds it
        # as it is, with no binding step (a staticmethod would add one to every call).
        setattr(owner, self.name, staticmethod(fn) if hasattr(type(fn), "__get__") else fn)
        return fn


def on_first_use(module: dict[str, Any], **names: str | Callable[..., Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) for the compiled functions an upper module offers to
    ``@njit`` callers: each ``name`` is a kernel (``"table.l1_lookup"``), or a Python function that
    the numba preset compiles. The first import or use of ``name`` loads it (from numba's cache when
    it can) and stores it in the module, so importing the module does not import numba.
    ``module``: the module's ``globals()``."""

    def __getattr__(name: str) -> Any:
        what = names.get(name)
        if what is None:
            raise AttributeError(f"module {module['__name__']!r} has no attribute {name!r}")
        if isinstance(what, str):
            kernel_module, _, function = what.rpartition(".")
            value = getattr(importlib.import_module(f"{__name__}.{kernel_module}"), function)
        else:
            value = importlib.import_module(f"{__name__}._jit").jit(what)
        module[name] = value
        return value

    return __getattr__
