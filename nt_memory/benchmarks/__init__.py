"""The benchmarks behind the README's Performance section, each beside its peers measured in the
same run. ``nt-memory bench`` runs the seed's table; ``nt-memory bench hot|scaling|busy|instructions``
runs one of these suites (the ``bench/`` scripts of a checkout call the same code).

- :mod:`.hot_paths`: get, put, arrays, JSON, locks and wake-ups beside LMDB, UltraDict, ``dict``,
  ``multiprocessing.Lock`` and ``posix_ipc.MessageQueue`` (issue 11's table);
- :mod:`.scaling`: how each cost grows with keys, subscribers and contending processes;
- :mod:`.busy`: reads and locks with more busy processes than cores;
- :mod:`.instructions`: instructions per call under ``valgrind --tool=callgrind``, which repeat exactly
  where timings do not.
"""
