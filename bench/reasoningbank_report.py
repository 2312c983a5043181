"""A checkout's shortcut to ``nt-memory bench reasoningbank``: see :mod:`nt_memory.benchmarks.reasoningbank`."""

from nt_memory.benchmarks.reasoningbank import main

if __name__ == "__main__":
    raise SystemExit(main())
