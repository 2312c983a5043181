"""A checkout's shortcut to ``nt-memory bench seed``: see :mod:`nt_memory.benchmarks.seed`."""

from nt_memory.benchmarks.seed import main

if __name__ == "__main__":
    raise SystemExit(main())
