"""A checkout's shortcut to ``nt-memory bench l1``: see :mod:`nt_memory.benchmarks.l1`."""

from nt_memory.benchmarks.l1 import main

if __name__ == "__main__":
    raise SystemExit(main())
