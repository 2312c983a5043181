"""A checkout's shortcut to ``nt-memory bench search``: see :mod:`nt_memory.benchmarks.search`."""

from nt_memory.benchmarks.search import main

if __name__ == "__main__":
    raise SystemExit(main())
