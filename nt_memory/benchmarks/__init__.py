"""The benchmarks behind the README's Performance section, each beside its peers measured in the
same run: their one home. ``nt-memory bench SUITE`` runs a suite (``seed`` by default); the ``bench/``
scripts of a checkout are shortcuts to the same modules. Every latency is a per-call perf_counter_ns
pair summarised by :func:`nt_memory.timing.percentiles` (one key scheme: ``p50``, ``p99``, ... with
``unit``).

- :mod:`.seed`: the seed's Performance Targets table with a verdict per row;
- :mod:`.hot_paths`: get, put, arrays, JSON, locks and wake-ups beside LMDB, UltraDict, ``dict``,
  ``multiprocessing.Lock`` and ``posix_ipc.MessageQueue`` (issue 11's table);
- :mod:`.scaling`: how each cost grows with keys, subscribers and contending processes;
- :mod:`.busy`: reads and locks with more busy processes than cores;
- :mod:`.instructions`: instructions per call under ``valgrind --tool=callgrind``, which repeat exactly
  where timings do not;
- :mod:`.vectors`: the footprint of N observations with embeddings and their search (issue 12);
- :mod:`.l1`, :mod:`.memory`, :mod:`.coordination`, :mod:`.search`, :mod:`.reasoningbank`: each
  tier's tails beside the store it replaces;
- :mod:`.cluster`: replication lag and cluster locks through nats-server, beside nats-py's KV and a
  Redis lock;
- :mod:`.startup`: the observer commands (``ls``, ``inspect``, ``top --once``) start to exit, beside
  the interpreter's start and ``import numba``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

BATCH = 100  # keys per get_many / put_many in every suite that sets a batch beside a loop of single calls


def suite_parser(suite: str, doc: str | None, quick_help: str) -> argparse.ArgumentParser:
    """The command line every suite shares (``--quick``, ``--json``); a suite adds its own."""
    ap = argparse.ArgumentParser(
        prog=f"nt-memory bench {suite}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--json", default=None, metavar="PATH", help="save the results as JSON")
    return ap


def finish(results: dict, text: str, json_path: str | None) -> int:
    """Print a suite's report and save its results; the exit status."""
    print(text)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(results, f, indent=2)
    return 0


def batch_calls(mem: Any, ns: str, keys: list[str], value: bytes) -> tuple[list, list, Callable, Callable]:
    """A batch suite's calls over ``keys`` in runs of BATCH (a last short run dropped): the
    argument tuples of ``mem.get_many`` and ``mem.put_many`` (``value`` under every key), and the
    Python loops of single ``get`` / ``put`` calls that take the same arguments, their peer."""
    runs = [keys[i : i + BATCH] for i in range(0, len(keys) - BATCH + 1, BATCH)]
    get, put = mem.get, mem.put

    def get_loop(ns, ks):
        return [get(ns, k) for k in ks]

    def put_loop(ns, pairs):
        for k, v in pairs:
            put(ns, k, v)

    return [(ns, ks) for ks in runs], [(ns, [(k, value) for k in ks]) for ks in runs], get_loop, put_loop
