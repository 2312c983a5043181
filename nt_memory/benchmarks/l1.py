"""L1 latency report: per-call p50/p99/p999 of HotCache.get/put and of the @njit lookup, beside
a plain dict, multiprocessing.Manager().dict() and LMDB measured in the same run.

    nt-memory bench l1 [--quick] [--keys 100000] [--calls 200000] [--json PATH]

Every figure is a per-call ``time.perf_counter_ns`` pair (its own cost, measured empty, is printed
and not subtracted). Keys are drawn uniformly from the whole table, so most lookups miss the CPU
caches; the ``hot16`` rows repeat 16 keys, the case of a tick handler watching its own positions.
"""

from __future__ import annotations

import multiprocessing as mp
import secrets
import tempfile
import time

import lmdb
import numpy as np

from nt_memory.benchmarks import finish, suite_parser
from nt_memory.benchmarks.seed import clock_pair_timed, key_arrays, njit_lookup_batch, njit_lookup_timed
from nt_memory.tiers.l1 import HotCache
from nt_memory.timing import percentiles, time_calls

TARGET_GET_P99_NS = 1000
TARGET_NJIT_P99_NS = 100


def run(nkeys: int, calls: int) -> dict:
    rng = np.random.default_rng(7)
    name = f"bench{secrets.token_hex(3)}"
    value = b"v" * 32
    cache = HotCache.create(name, max_entries=nkeys)
    results: dict = {"keys": nkeys, "calls": calls, "value_bytes": len(value)}
    try:
        keys = [f"key{i}" for i in range(nkeys)]
        for k in keys:
            cache.put("agent", k, value)
        order = rng.integers(0, nkeys, calls)
        uniform = [("agent", keys[i]) for i in order]
        hot = [("agent", keys[i % 16]) for i in range(calls)]
        results["timer_pair"] = percentiles(time_calls(lambda: None, [()] * calls))

        get = cache.get
        time_calls(get, uniform[:10_000])
        results["l1_get_uniform"] = percentiles(time_calls(get, uniform))
        results["l1_get_hot16"] = percentiles(time_calls(get, hot))
        d = {("agent", k): value for k in keys}
        results["dict_get_uniform"] = percentiles(time_calls(lambda ns, k: d.get((ns, k)), uniform))
        results["dict_get_hot16"] = percentiles(time_calls(lambda ns, k: d.get((ns, k)), hot))

        with tempfile.TemporaryDirectory() as tmp:
            env = lmdb.open(tmp, map_size=1 << 30, sync=False, metasync=False)
            with env.begin(write=True) as txn:
                for k in keys:
                    txn.put(b"agent\0" + k.encode(), value)
            with env.begin() as txn:
                results["lmdb_get_uniform"] = percentiles(
                    time_calls(lambda ns, k: txn.get(ns.encode() + b"\0" + k.encode()), uniform)
                )
            env.close()

        with mp.get_context("spawn").Manager() as manager:
            md = manager.dict()
            md.update({f"agent/{k}": value for k in keys[: min(nkeys, 10_000)]})
            sample = [(f"agent/{keys[i % min(nkeys, 10_000)]}",) for i in order[: min(calls, 20_000)]]
            results["manager_dict_get"] = percentiles(time_calls(md.get, sample))

        puts = [("agent", keys[i], value) for i in order[: min(calls, 100_000)]]
        results["l1_put"] = percentiles(time_calls(cache.put, puts))
        results["dict_set"] = percentiles(time_calls(lambda ns, k, v: d.__setitem__((ns, k), v), puts))

        handle = cache.njit_handle()
        hashes, karr, klen = key_arrays(cache, "agent", keys)
        out = np.zeros(cache.max_value_bytes + 8, np.uint8)
        lat = np.zeros(calls, np.int64)
        hot_order = (np.arange(calls) % 16).astype(np.int64)
        clock_pair_timed(calls, lat)
        results["njit_clock_pair"] = percentiles(lat.copy())
        njit_lookup_timed(handle, hashes, karr, klen, order, out, lat)
        results["njit_lookup_uniform"] = percentiles(lat.copy())
        njit_lookup_timed(handle, hashes, karr, klen, hot_order, out, lat)
        results["njit_lookup_hot16"] = percentiles(lat.copy())
        big = rng.integers(0, nkeys, 2_000_000)
        njit_lookup_batch(handle, hashes, karr, klen, big[:1000])
        t0 = time.perf_counter()
        njit_lookup_batch(handle, hashes, karr, klen, big)
        results["njit_batch_lookups_per_s"] = len(big) / (time.perf_counter() - t0)
    finally:
        cache.close()
        cache.unlink()
    return results


def report(r: dict) -> str:
    lines = [f"L1 latency, {r['keys']:,} keys, {r['value_bytes']}-byte values, {r['calls']:,} timed calls each"]
    lines.append(f"{'operation':28} {'p50 ns':>10} {'p99 ns':>10} {'p999 ns':>10}")
    for k, v in r.items():
        if isinstance(v, dict):
            lines.append(f"{k:28} {v['p50']:10.0f} {v['p99']:10.0f} {v['p999']:10.0f}")
    g = r["l1_get_uniform"]
    lines.append("")
    lines.append(
        f"l1 get p99 {g['p99']:.0f} ns vs seed target < {TARGET_GET_P99_NS} ns: "
        f"{'PASS' if g['p99'] < TARGET_GET_P99_NS else 'MISS'}; "
        f"p50 ratio to dict.get {g['p50'] / r['dict_get_uniform']['p50']:.1f}x, "
        f"to Manager().dict() 1/{r['manager_dict_get']['p50'] / g['p50']:.0f}, "
        f"to LMDB get {g['p50'] / r['lmdb_get_uniform']['p50']:.2f}x"
    )
    n = r["njit_lookup_hot16"]
    lines.append(
        f"njit lookup p99 {n['p99']:.0f} ns (hot16), {r['njit_lookup_uniform']['p99']:.0f} ns (uniform) "
        f"vs seed target < {TARGET_NJIT_P99_NS} ns (clock pair alone: {r['njit_clock_pair']['p50']:.0f} ns)"
    )
    lines.append(f"njit batch lookups: {r['njit_batch_lookups_per_s'] / 1e6:.1f} M/s (uniform keys)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = suite_parser("l1", __doc__, "20k keys, 40k calls")
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--calls", type=int, default=200_000)
    args = ap.parse_args(argv)
    r = run(20_000, 40_000) if args.quick else run(args.keys, args.calls)
    return finish(r, report(r), args.json)


if __name__ == "__main__":
    raise SystemExit(main())
