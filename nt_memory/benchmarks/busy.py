"""Reads and locks on a busy host: more busy processes than cores, the peers under the same load.

    nt-memory bench busy [--quick] [--json PATH] [--burners N]
    python -m bench.busy ...                 # the same, from a checkout

An agent process (a ``MemorySystem`` opened by name, with its flusher-watch thread, as in the demo)
reads its own ``position`` key and takes a lock, one ``perf_counter_ns`` pair per call, first on
an idle host and then while ``--burners`` processes (default: twice the cores) spin in pure
Python. Beside each row, in the same process and the same phase: ``dict.get``, LMDB's get with a
reused read transaction, and ``multiprocessing.Lock``. On an oversubscribed host every p99 is a
scheduler time slice (a call preempted in the middle waits for the CPU to come back); what is ours
is whatever more than the peers' we add.

The "after a wake-up" rows time one call after each 200 us sleep, the three stores in turn, as the
demo's agents read their position once per decision after sleeping in ``recv`` and ``lock``. Every
call then starts with cold caches and TLB (other processes ran on the core meanwhile): that, not a
slow path of ours, is what the demo's microseconds are, and the peers pay it too.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import secrets
import shutil
import tempfile
import time

import lmdb
import numpy as np

from nt_memory.benchmarks import finish, suite_parser
from nt_memory.benchmarks.hot_paths import CTX, VALUE, _config
from nt_memory.timing import percentiles, time_calls


def _burn(stop) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(10_000):
            x += 1


WAKE_SLEEP_S = 200e-6


def _after_wake(fns: dict, rounds: int) -> dict:
    """One call of each of ``fns`` after its own sleep, the functions in turn, ``rounds`` times."""
    clock = time.perf_counter_ns
    lat = {k: np.empty(rounds, np.int64) for k in fns}
    items = list(fns.items())
    for i in range(rounds):
        for k, fn in items:
            time.sleep(WAKE_SLEEP_S)
            t0 = clock()
            fn()
            lat[k][i] = clock() - t0
    return {k: percentiles(v) for k, v in lat.items()}


def _agent(name: str, path: str, calls: int, wake_rounds: int, lock, go, done, out) -> None:
    from nt_memory import MemorySystem

    mem = MemorySystem.open(_config(name, path, 1024), label="bench-busy-agent")
    env = lmdb.open(os.path.join(path, "peer"), readonly=True, lock=False)
    try:
        d = {"position": VALUE}
        key = [("agent_1", "position")] * calls
        lk = [(b"agent_1\0position",)] * calls

        def ours_lock():
            mem.release_lock(mem.acquire_lock("risk"))

        def mp_lock():
            lock.acquire()
            lock.release()

        for phase in ("idle", "busy"):
            go.wait(600)
            time_calls(mem.get, key[:10_000])
            r = {"get": percentiles(time_calls(mem.get, key))}
            r["dict_get"] = percentiles(time_calls(d.get, [("position",)] * calls))
            with env.begin() as txn:
                r["lmdb_get"] = percentiles(time_calls(txn.get, lk))
            r["lock"] = percentiles(time_calls(ours_lock, [()] * (calls // 2)))
            r["mp_lock"] = percentiles(time_calls(mp_lock, [()] * (calls // 2)))
            with env.begin() as txn:
                cold = _after_wake(
                    {
                        "get": lambda: mem.get("agent_1", "position"),
                        "dict_get": lambda: d.get("position"),
                        "lmdb_get": lambda: txn.get(b"agent_1\0position"),
                    },
                    wake_rounds,
                )
            r |= {f"{k}_after_wake": v for k, v in cold.items()}
            out.put((phase, r))
            done.wait(600)
    finally:
        env.close()
        mem.close()


def run(calls: int, burners: int, wake_rounds: int = 3000) -> dict:
    from nt_memory import MemorySystem

    name = f"bbz{secrets.token_hex(3)}"
    path = tempfile.mkdtemp(prefix="nt-memory-bench-")
    mem = MemorySystem.open(_config(name, path, 1024), label="bench-busy")
    stop = CTX.Event()
    procs: list[mp.process.BaseProcess] = []
    try:
        mem.put("agent_1", "position", VALUE)
        mem.flush()
        env = lmdb.open(os.path.join(path, "peer"), map_size=1 << 24)
        with env.begin(write=True) as txn:
            txn.put(b"agent_1\0position", VALUE)
        env.close()
        go, done, out, lock = CTX.Barrier(2), CTX.Barrier(2), CTX.Queue(), CTX.Lock()  # kept until joined
        agent = CTX.Process(target=_agent, args=(name, path, calls, wake_rounds, lock, go, done, out))
        agent.start()
        procs.append(agent)
        go.wait(600)
        r = {"cores": os.cpu_count(), "burners": burners, "calls": calls, "wake_rounds": wake_rounds}
        phase, r["idle"] = out.get(timeout=1800)
        done.wait(600)
        procs += [CTX.Process(target=_burn, args=(stop,)) for _ in range(burners)]
        for p in procs[1:]:
            p.start()
        time.sleep(1.0)  # let the burners get going
        go.wait(600)
        phase, r["busy"] = out.get(timeout=1800)
        done.wait(600)
    finally:
        stop.set()
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
        mem.close()
        mem.unlink()
        shutil.rmtree(path, ignore_errors=True)
    return r


ROWS = [
    ("get own key", "get", "dict_get", "dict.get"),
    ("get own key", "get", "lmdb_get", "LMDB get"),
    ("lock acquire + release", "lock", "mp_lock", "mp.Lock"),
    ("get, after a wake-up", "get_after_wake", "dict_get_after_wake", "dict.get"),
    ("get, after a wake-up", "get_after_wake", "lmdb_get_after_wake", "LMDB get"),
]


def report(r: dict) -> str:
    lines = [
        f"reads and locks, {r['calls']:,} calls per row, in an agent process: idle host, then {r['burners']} "
        f"busy processes on {r['cores']} cores (ns); 'after a wake-up': {r['wake_rounds']:,} calls each, "
        f"one per {WAKE_SLEEP_S * 1e6:.0f} us sleep",
        f"{'call':24} {'host':5} {'ours p50/p99':>18}   {'peer':9} {'peer p50/p99':>18} {'ratio p50/p99':>14}",
    ]
    for label, ours, peer, peer_label in ROWS:
        for phase in ("idle", "busy"):
            a, b = r[phase][ours], r[phase][peer]
            lines.append(
                f"{label:24} {phase:5} {a['p50']:8.0f} /{a['p99']:8.0f}   {peer_label:9} {b['p50']:8.0f} "
                f"/{b['p99']:8.0f} {a['p50'] / b['p50']:6.2f} /{a['p99'] / b['p99']:5.2f}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = suite_parser("busy", __doc__, "20,000 calls per row")
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--burners", type=int, default=2 * (os.cpu_count() or 1))
    args = ap.parse_args(argv)
    r = run(20_000 if args.quick else args.calls, args.burners, 1000 if args.quick else 3000)
    return finish(r, report(r), args.json)


if __name__ == "__main__":
    raise SystemExit(main())
