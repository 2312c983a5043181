"""A checkout's shortcut to ``nt-memory bench coordination``: see :mod:`nt_memory.benchmarks.coordination`."""

from nt_memory.benchmarks.coordination import main

if __name__ == "__main__":
    raise SystemExit(main())
