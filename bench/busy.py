"""A checkout's shortcut to ``nt-memory bench busy``: see :mod:`nt_memory.benchmarks.busy`."""

from nt_memory.benchmarks.busy import main

if __name__ == "__main__":
    raise SystemExit(main())
