"""The compiled fast path (``nt_memory/_fastpath.c``), when it is built and not switched off.

``fast`` is the extension module, or None: with ``NT_MEMORY_PURE=1`` in the environment (CI runs
the whole suite once that way), or when it was not built (no C compiler at install time; then a
one-line warning says so). Every user of ``fast`` has a pure-Python path that does the same.
"""

from __future__ import annotations

import importlib
import os
import sys

PURE = os.environ.get("NT_MEMORY_PURE", "") not in ("", "0")
fast = None
if not PURE:
    try:
        # By name: import-linter cannot see inside a C extension and would charge this import to
        # the package ``nt_memory`` (and so to every layer it imports), breaking the layer check.
        fast = importlib.import_module("nt_memory._fastpath")
    except ImportError as exc:
        sys.stderr.write(f"nt-memory: compiled fast path unavailable ({exc}); running the pure-Python path\n")
