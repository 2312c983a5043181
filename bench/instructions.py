"""A checkout's shortcut to ``nt-memory bench instructions``: see :mod:`nt_memory.benchmarks.instructions`."""

from nt_memory.benchmarks.instructions import main

if __name__ == "__main__":
    raise SystemExit(main())
