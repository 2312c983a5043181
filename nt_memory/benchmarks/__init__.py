"""The benchmarks behind the README's Performance section, each beside its peers measured in the
same run. ``nt-memory bench`` runs the seed's table; ``nt-memory bench hot|scaling|busy|instructions|vectors``
runs one of these suites (the ``bench/`` scripts of a checkout call the same code).

- :mod:`.hot_paths`: get, put, arrays, JSON, locks and wake-ups beside LMDB, UltraDict, ``dict``,
  ``multiprocessing.Lock`` and ``posix_ipc.MessageQueue`` (issue 11's table);
- :mod:`.scaling`: how each cost grows with keys, subscribers and contending processes;
- :mod:`.busy`: reads and locks with more busy processes than cores;
- :mod:`.instructions`: instructions per call under ``valgrind --tool=callgrind``, which repeat exactly
  where timings do not;
- :mod:`.vectors`: the footprint of N observations with embeddings and their search (issue 12).
"""

from __future__ import annotations

import argparse
import json


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
