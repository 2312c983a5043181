"""The numba preset. Every compiled function in nt-memory is made with :data:`jit`.

``cache=True`` so that a process after the first one loads machine code from ``__pycache__`` instead
of compiling (the cold start is measured in the README); ``nogil=True`` so that kernels run in
parallel with other Python threads. Nothing else in the package calls ``numba.njit`` directly.
"""

from __future__ import annotations

import functools

import numba

jit = functools.partial(numba.njit, cache=True, nogil=True)

# The numba type of a Python ``bytes`` argument.
BYTES = numba.types.Bytes(numba.types.uint8, 1, "C", readonly=True)
INT = numba.types.int64


def entry_point(dispatcher, *arg_types):
    """The compiled entry of ``dispatcher`` for exactly ``arg_types``, for Python fast paths.

    Calling it skips numba's per-call type dispatch (about 150 ns of a 300 ns call with three
    arguments on the 2-core dev machine). The caller must pass exactly those types: ``int`` for
    ``INT``, ``bytes`` (not bytearray) for ``BYTES``. Loads from the cache when it can.
    """
    return dispatcher.compile(tuple(arg_types))
