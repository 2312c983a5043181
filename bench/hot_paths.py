"""A checkout's shortcut to ``nt-memory bench hot``: see :mod:`nt_memory.benchmarks.hot_paths`."""

from nt_memory.benchmarks.hot_paths import main

if __name__ == "__main__":
    raise SystemExit(main())
