"""A checkout's shortcut to ``nt-memory bench memory``: see :mod:`nt_memory.benchmarks.memory`."""

from nt_memory.benchmarks.memory import main

if __name__ == "__main__":
    raise SystemExit(main())
