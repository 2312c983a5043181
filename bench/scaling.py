"""A checkout's shortcut to ``nt-memory bench scaling``: see :mod:`nt_memory.benchmarks.scaling`."""

from nt_memory.benchmarks.scaling import main

if __name__ == "__main__":
    raise SystemExit(main())
