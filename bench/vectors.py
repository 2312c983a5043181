"""A checkout's shortcut to ``nt-memory bench vectors``: see :mod:`nt_memory.benchmarks.vectors`."""

from nt_memory.benchmarks.vectors import main

if __name__ == "__main__":
    raise SystemExit(main())
