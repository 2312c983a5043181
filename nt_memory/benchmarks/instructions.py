"""Instructions per call of each hot path beside its peer, counted by ``valgrind --tool=callgrind``.

    nt-memory bench instructions [--calls 20000] [--json PATH]
    python -m bench.instructions            # the same, from a checkout

Timings on a shared 2-core VM swing 3x within minutes; instruction counts repeat exactly. A worker
process makes a memory system, LMDB, a ``dict``, a ``multiprocessing.Lock`` and a
``posix_ipc.MessageQueue`` with the same keys, then runs each call ``--calls`` times in the same
Python loop (``for a in args: fn(*a)``). Callgrind dumps its counters each time the worker calls
``os.getppid()`` (``--dump-before=getppid``), so every row is one dump of the main thread
(``--separate-threads=yes``: the flusher and heartbeat threads are counted apart). Each row prints the
instructions per call (the loop's own share included, as it is for the peer) and the ratio to its
peer. The last two rows count ``get_many`` / ``put_many`` of BATCH keys per key, beside a Python
loop of single calls over the same keys: how much of a batch's gain in throughput (timed by
``nt-memory bench hot``) is fewer instructions rather than memory misses overlapped.

numba kernels are compiled once natively for a fixed CPU model (``NUMBA_CPU_NAME=haswell``, which
valgrind emulates) into a cache of their own, so the run under valgrind loads them instead of
compiling for minutes.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from nt_memory.benchmarks import BATCH, batch_calls, finish, suite_parser

CPU_NAME = "haswell"
CPU_FEATURES = "+avx,+avx2,+bmi,+bmi2,+fma,+popcnt,+lzcnt,+movbe,+f16c,+sse4.2"
CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "nt-memory", "callgrind-numba")

# (label, peer label): the rows the report pairs; a peer of None is printed alone.
PAIRS = [
    ("HotCache.get, 64 B bytes", "dict.get"),
    ("HotCache.get, 64 B bytes", "LMDB get, reused read txn"),
    ("MemorySystem.get, 64 B bytes", "LMDB get, reused read txn"),
    ("HotCache.get, float64[8]", "LMDB get + np.frombuffer"),
    ("HotCache.get, JSON object", "json.loads, same bytes"),
    ("HotCache.put, 64 B bytes", "dict.__setitem__"),
    ("MemorySystem.put, 64 B bytes (write-behind)", "HotCache.put, 64 B bytes"),
    ("acquire_lock + release_lock", "multiprocessing.Lock acquire + release"),
    ("publish + try_recv, 64 B", "MessageQueue send + receive, 64 B"),
    ("l1_lookup in @njit code, per lookup", None),
    (f"MemorySystem.get_many, {BATCH} keys, per key", "a loop of MemorySystem.get, per key"),
    (f"MemorySystem.put_many, {BATCH} keys, per key", "a loop of MemorySystem.put, per key"),
]
EMPTY = "empty loop (lambda: None)"


def _loop(fn, args) -> None:
    for a in args:
        fn(*a)


def worker(calls: int, rows_path: str) -> None:
    """The process callgrind watches: each case warmed up, then run between two dumps."""
    import multiprocessing as mp

    import lmdb
    import numpy as np
    import posix_ipc

    from nt_memory import CacheConfig, MemoryConfig, MemorySystem
    from nt_memory.benchmarks.seed import key_arrays, njit_lookup_batch

    mark = os.getppid  # libc getppid(): callgrind dumps before it (--dump-before=getppid)
    nkeys, warm = 1000, min(calls, 2000)
    tmp = tempfile.mkdtemp(prefix="nt-memory-callgrind-")
    name = f"cg{os.getpid()}"
    mem = MemorySystem.open(
        MemoryConfig(name=name, storage_path=tmp, cache_config=CacheConfig(max_entries=4 * nkeys, ttl=None)),
        label="callgrind",
    )
    mq = posix_ipc.MessageQueue(f"/{name}mq", posix_ipc.O_CREX, max_messages=10, max_message_size=64)
    rows: list[tuple[str, int]] = []
    try:
        value, array, obj = bytes(range(64)), np.arange(8, dtype=np.float64), {"qty": 10, "px": 101.25, "side": "buy"}
        for i in range(nkeys):
            mem.put("b", f"key{i}", value)
            mem.put("a", f"key{i}", array)
            mem.put("j", f"key{i}", obj)
        mem.flush()
        env = lmdb.open(os.path.join(tmp, "peer"), map_size=1 << 26, sync=False, metasync=False)
        with env.begin(write=True) as w:
            for i in range(nkeys):
                w.put(f"b\0key{i}".encode(), value)
                w.put(f"a\0key{i}".encode(), array.tobytes())
        txn = env.begin()
        order = np.random.default_rng(3).integers(0, nkeys, calls)
        cache, d, lock = mem.l1, {f"key{i}": value for i in range(nkeys)}, mp.Lock()
        raw = json.dumps(obj).encode()
        sub = mem.subscribe("cg/topic")
        msg = value

        def pubsub():
            mem.publish("cg/topic", msg)
            sub.try_recv()

        def mq_pair():
            mq.send(msg)
            mq.receive()

        def ours_lock():
            mem.release_lock(mem.acquire_lock("cg"))

        def mp_lock():
            lock.acquire()
            lock.release()

        cases: list[tuple[str, Callable[..., Any], list[tuple]]] = [
            (EMPTY, lambda: None, [()] * calls),
            ("dict.get", d.get, [(f"key{i}",) for i in order]),
            ("LMDB get, reused read txn", txn.get, [(f"b\0key{i}".encode(),) for i in order]),
            ("HotCache.get, 64 B bytes", cache.get, [("b", f"key{i}") for i in order]),
            ("MemorySystem.get, 64 B bytes", mem.get, [("b", f"key{i}") for i in order]),
            (
                "LMDB get + np.frombuffer",
                lambda k: np.frombuffer(txn.get(k), np.float64),  # type: ignore[arg-type]
                [(f"a\0key{i}".encode(),) for i in order],
            ),
            ("HotCache.get, float64[8]", cache.get, [("a", f"key{i}") for i in order]),
            ("json.loads, same bytes", json.loads, [(raw,)] * calls),
            ("HotCache.get, JSON object", cache.get, [("j", f"key{i}") for i in order]),
            ("dict.__setitem__", d.__setitem__, [(f"key{i}", value) for i in order]),
            ("HotCache.put, 64 B bytes", cache.put, [("b", f"key{i}", value) for i in order]),
            ("MemorySystem.put, 64 B bytes (write-behind)", mem.put, [("b", f"key{i}", value) for i in order]),
            ("multiprocessing.Lock acquire + release", mp_lock, [()] * calls),
            ("acquire_lock + release_lock", ours_lock, [()] * calls),
            ("MessageQueue send + receive, 64 B", mq_pair, [()] * calls),
            ("publish + try_recv, 64 B", pubsub, [()] * calls),
        ]
        gets, puts, get_loop, put_loop = batch_calls(mem, "b", [f"key{i}" for i in order], value)
        # A batch row (and its loop) is counted per key: its calls times BATCH.
        cases += [
            (f"MemorySystem.get_many, {BATCH} keys, per key", mem.get_many, gets),
            ("a loop of MemorySystem.get, per key", get_loop, gets),
            (f"MemorySystem.put_many, {BATCH} keys, per key", mem.put_many, puts),
            ("a loop of MemorySystem.put, per key", put_loop, puts),
        ]
        for label, fn, args in cases:
            per = BATCH if label.endswith(", per key") else 1
            _loop(fn, args[: max(1, warm // per)])
            mark()
            _loop(fn, args)
            mark()
            rows.append((label, len(args) * per))
        hashes, karr, klen = key_arrays(cache, "b", [f"key{i}" for i in range(16)])
        handle, hot = cache.njit_handle(), (np.arange(calls) % 16).astype(np.int64)
        njit_lookup_batch(handle, hashes, karr, klen, hot[:warm])
        mark()
        njit_lookup_batch(handle, hashes, karr, klen, hot)
        mark()
        rows.append(("l1_lookup in @njit code, per lookup", calls))
        txn.abort()
        env.close()
    finally:
        mq.close()
        mq.unlink()
        mem.close()
        mem.unlink()
        shutil.rmtree(tmp, ignore_errors=True)
    with open(rows_path, "w") as f:
        json.dump(rows, f)


def _totals(path: str) -> int:
    with open(path) as f:
        for line in f:
            if line.startswith("totals:") or line.startswith("summary:"):
                return int(line.split()[1])
    raise RuntimeError(f"{path}: no totals line")


def run(calls: int = 20_000, valgrind: str | None = None) -> dict:
    valgrind = valgrind or shutil.which("valgrind")
    if valgrind is None:
        raise RuntimeError("valgrind is not on PATH: apt-get install valgrind (Debian's package)")
    env = dict(os.environ, NUMBA_CPU_NAME=CPU_NAME, NUMBA_CPU_FEATURES=CPU_FEATURES, NUMBA_CACHE_DIR=CACHE_DIR)
    env.pop("NUMBA_BOUNDSCHECK", None)
    me = [sys.executable, "-m", "nt_memory.benchmarks.instructions", "--worker"]
    work = tempfile.mkdtemp(prefix="nt-memory-callgrind-out-")
    try:
        rows_path = os.path.join(work, "rows.json")
        # Natively first: compiles every kernel for the fixed CPU model into the cache.
        subprocess.run([*me, "--calls", "200", "--rows", rows_path], env=env, check=True)
        out = os.path.join(work, "cg.out")
        cmd = [valgrind, "--tool=callgrind", "--separate-threads=yes", "--dump-before=getppid"]
        cmd += [f"--callgrind-out-file={out}", *me, "--calls", str(calls), "--rows", rows_path]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"callgrind run failed ({done.returncode}):\n{done.stderr[-3000:]}")
        with open(rows_path) as f:
            rows = json.load(f)
        dumps = sorted(glob.glob(out + ".*-01"), key=lambda p: int(p.rsplit(".", 1)[1].split("-")[0]))
        if len(dumps) != 2 * len(rows):
            raise RuntimeError(f"expected {2 * len(rows)} dumps of the main thread, found {len(dumps)}")
        per_call = {label: _totals(dumps[2 * i + 1]) / n for i, (label, n) in enumerate(rows)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"calls": calls, "cpu_model": CPU_NAME, "instructions_per_call": per_call}


def report(r: dict) -> str:
    per = r["instructions_per_call"]
    lines = [
        f"instructions per call (valgrind --tool=callgrind, {r['calls']:,} calls per row, kernels built for "
        f"{r['cpu_model']}), each including the Python loop that makes the call: {per[EMPTY]:,.0f} for "
        "lambda: None",
        f"{'call':46} {'per call':>10}   {'peer, same loop':42} {'per call':>10} {'ratio':>6}",
    ]
    for ours, peer in PAIRS:
        a = per[ours]
        if peer is None:
            lines.append(f"{ours:46} {a:10,.0f}   (a loop in nopython code, no Python call)")
            continue
        b = per[peer]
        lines.append(f"{ours:46} {a:10,.0f}   {peer:42} {b:10,.0f} {a / b:6.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = suite_parser("instructions", __doc__, "5,000 calls per row")
    ap.add_argument("--calls", type=int, default=20_000, help="calls per row (default 20,000)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--rows", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.calls, args.rows)
        return 0
    r = run(5000 if args.quick else args.calls)
    return finish(r, report(r), args.json)


if __name__ == "__main__":
    sys.exit(main())
