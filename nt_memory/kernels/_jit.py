"""The numba preset. Every compiled function in nt-memory is made with :data:`jit`.

``cache=True`` so that a process after the first one loads machine code from ``__pycache__`` instead
of compiling (the cold start is measured in the README); ``nogil=True`` so that kernels run in
parallel with other Python threads. Nothing else in the package calls ``numba.njit`` directly.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from typing import Any, TypeVar, overload

import numba
import xxhash
from numba.core import caching

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LAYOUT = os.path.join(os.sep + "kernels", "layout") + os.sep


def _jitted_sources_fingerprint() -> str:
    """A hash of every nt-memory module that defines compiled code (they import this preset) and of
    the constants they compile in (``kernels/layout``).

    numba stamps a cached function with its own file only, so a kernel whose callee or constants
    changed (an upgrade, an edit) would load machine code built against the old ones. Every
    nt-memory function's cache is stamped with this instead, so any change to compiled code
    invalidates it all."""
    h = xxhash.xxh3_64()
    for path in sorted(glob.glob(os.path.join(_PACKAGE, "**", "*.py"), recursive=True)):
        with open(path, "rb") as f:
            src = f.read()
        if path.endswith("_jit.py") or b"kernels._jit import" in src or _LAYOUT in path:
            h.update(path[len(_PACKAGE) :].encode())
            h.update(src)
    return h.hexdigest()


_FINGERPRINT = _jitted_sources_fingerprint()


def _whole_package_stamp(base):
    class Locator(base):
        def get_source_stamp(self):
            return (super().get_source_stamp(), _FINGERPRINT)

        @classmethod
        def from_function(cls, py_func, py_file):
            if not os.path.abspath(py_file).startswith(_PACKAGE + os.sep):
                return None  # not ours: numba's own locators handle it as usual
            return super().from_function(py_func, py_file)

    Locator.__name__ = f"NtMemory{base.__name__}"
    return Locator


# Ahead of numba's own locators, in numba's order of preference; they decline foreign functions.
caching.CacheImpl._locator_classes[:0] = [
    _whole_package_stamp(caching.UserProvidedCacheLocator),
    _whole_package_stamp(caching.InTreeCacheLocator),
    _whole_package_stamp(caching.UserWideCacheLocator),
]

_F = TypeVar("_F", bound=Callable[..., Any])


@overload
def jit(fn: _F) -> _F: ...
@overload
def jit(fn: None = None, **options: Any) -> Callable[[_F], _F]: ...
def jit(fn=None, **options):
    """``numba.njit`` with ``cache=True, nogil=True``: ``@jit`` or ``@jit(inline="always")``. Typed
    as returning the function itself, so that the type check reads a kernel's call as its Python
    signature (numba's own hints type the dispatcher's ``__call__`` loosely).

    Kernels (``nt_memory.kernels``) are compiled without numba's reference-counting runtime unless
    they say ``allocates=True``: their arrays are views over addresses with no owner to count, yet
    every array handed to a function that is not inlined cost an ``NRT_incref``/``NRT_decref``
    call pair, 21 calls and 138 of ~1,930 instructions per batched put under callgrind. A kernel
    that allocates (``np.empty``) without saying so fails to compile; code outside the kernels
    (the demo, the benchmarks) keeps the runtime."""
    allocates = options.pop("allocates", False)

    def decorate(f):
        counted = allocates or not f.__module__.startswith(__name__.rpartition(".")[0])
        return numba.njit(cache=True, nogil=True, _nrt=counted, **options)(f)

    return decorate if fn is None else decorate(fn)


class CEntry:
    """A kernel wrapper with a C ABI (``numba.cfunc``), compiled (or loaded from the cache) on first
    use of :attr:`address`: the compiled extension (nt_memory/_fastpath.c) calls it through that
    address with the GIL held, so a Python call costs one C call, not numba's dispatch."""

    def __init__(self, pyfunc, signature: str):
        self.pyfunc = pyfunc
        self.signature = signature
        self._compiled: Any = None

    @property
    def address(self) -> int:
        if self._compiled is None:
            self._compiled = numba.cfunc(self.signature, cache=True, nopython=True)(self.pyfunc)  # type: ignore[call-arg]
        return self._compiled.address


# The numba type of a Python ``bytes`` argument.
BYTES = numba.types.Bytes(numba.types.uint8, 1, "C", readonly=True)
INT = numba.types.int64
# The numba type of a C-contiguous numpy int64 array argument.
INT_ARRAY = numba.types.int64[::1]
U8_ARRAY = numba.types.uint8[::1]
F32_ARRAY = numba.types.float32[::1]


def entry_point(dispatcher, *arg_types):
    """The compiled entry of ``dispatcher`` for exactly ``arg_types``, for Python fast paths.

    Calling it skips numba's per-call type dispatch (about 150 ns of a 300 ns call with three
    arguments on the 2-core dev machine). The caller must pass exactly those types: ``int`` for
    ``INT``, ``bytes`` (not bytearray) for ``BYTES``. Loads from the cache when it can.
    """
    return dispatcher.compile(tuple(arg_types))
