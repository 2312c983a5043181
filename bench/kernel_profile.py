"""A checkout's shortcut to :mod:`nt_memory.benchmarks.kernel_profile` (a development tool)."""

from nt_memory.benchmarks.kernel_profile import main

if __name__ == "__main__":
    raise SystemExit(main())
