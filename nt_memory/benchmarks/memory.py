"""MemorySystem (L1 + journal + LMDB) report: put with write-behind vs ``durability="sync"``,
sustained put throughput with the flusher running, get of an L3-only (cold) key and of a promoted
key, each beside direct LMDB measured in the same run.

    nt-memory bench memory [--quick] [--n 20000] [--json PATH]
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import time

import lmdb

from nt_memory import CacheConfig, MemoryConfig, MemorySystem
from nt_memory.benchmarks import finish, suite_parser
from nt_memory.timing import percentiles, time_calls

VALUE = {"qty": 10, "px": 101.25, "side": "buy"}


def _open(path: str, durability: str, max_entries: int) -> MemorySystem:
    return MemorySystem.open(
        MemoryConfig(
            name=f"bench{secrets.token_hex(3)}",
            storage_path=path,
            durability=durability,
            cache_config=CacheConfig(max_entries=max_entries),
        )
    )


def run(n: int) -> dict:
    r: dict = {"n": n, "value": VALUE}
    root = tempfile.mkdtemp(prefix="nt-memory-bench-")
    try:
        keys = [f"key{i}" for i in range(n)]
        # --- write-behind puts, then sustained throughput with the flusher draining
        mem = _open(f"{root}/wb", "write-behind", n)
        try:
            r["put_write_behind"] = percentiles(time_calls(mem.put, [("agent", k, VALUE) for k in keys]))
            t0 = time.perf_counter()
            total = 0
            while time.perf_counter() - t0 < 3.0:
                for k in keys[:1000]:
                    mem.put("agent", k, VALUE)
                total += 1000
            mem.flush()
            r["put_sustained_per_s"] = total / (time.perf_counter() - t0)
            # --- reads: promoted (L1 hit) and cold (L3 only: removed from L1 first)
            r["get_promoted"] = percentiles(time_calls(mem.get, [("agent", k) for k in keys]))
            for k in keys:
                mem.l1.delete("agent", k)
            r["get_cold_l3"] = percentiles(time_calls(mem.get, [("agent", k) for k in keys]))
            r["get_after_promotion"] = percentiles(time_calls(mem.get, [("agent", k) for k in keys]))
        finally:
            mem.close()
            mem.unlink()
        # --- sync puts
        mem = _open(f"{root}/sync", "sync", n)
        try:
            m = min(n, 2000)
            r["put_sync"] = percentiles(time_calls(mem.put, [("agent", k, VALUE) for k in keys[:m]]))
        finally:
            mem.close()
            mem.unlink()
        # --- direct LMDB baselines (JSON encoding included, as a user would do it)
        env = lmdb.open(f"{root}/lmdb", map_size=1 << 30, sync=True)
        try:

            def lmdb_put_sync(k):
                with env.begin(write=True) as txn:
                    txn.put(b"agent\0" + k.encode(), json.dumps(VALUE).encode())

            r["lmdb_put_txn_per_put_sync"] = percentiles(
                time_calls(lmdb_put_sync, [(k,) for k in keys[: min(n, 2000)]])
            )
            with env.begin(write=True) as txn:
                for k in keys:
                    txn.put(b"agent\0" + k.encode(), json.dumps(VALUE).encode())
            with env.begin() as txn:
                r["lmdb_get"] = percentiles(
                    time_calls(lambda k: json.loads(txn.get(b"agent\0" + k.encode()) or b"null"), [(k,) for k in keys])
                )
        finally:
            env.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return r


def report(r: dict) -> str:
    lines = [f"MemorySystem, {r['n']:,} keys, value {json.dumps(r['value'])}"]
    lines.append(f"{'operation':28} {'p50 ns':>10} {'p99 ns':>10} {'p999 ns':>10}")
    for k, v in r.items():
        if isinstance(v, dict) and "p50" in v:
            lines.append(f"{k:28} {v['p50']:10.0f} {v['p99']:10.0f} {v['p999']:10.0f}")
    lines.append("")
    lines.append(f"sustained puts with the flusher running: {r['put_sustained_per_s']:,.0f}/s")
    wb, sy = r["put_write_behind"]["p50"], r["put_sync"]["p50"]
    lines.append(
        f"write-behind put is {sy / wb:.0f}x faster than sync (p50); sync put vs direct LMDB txn-per-put: "
        f"{sy / r['lmdb_put_txn_per_put_sync']['p50']:.2f}x"
    )
    lines.append(
        f"cold get (L3) vs direct LMDB get: {r['get_cold_l3']['p50'] / r['lmdb_get']['p50']:.2f}x; "
        f"promoted get: {r['get_promoted']['p50'] / r['lmdb_get']['p50']:.2f}x (p50)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = suite_parser("memory", __doc__, "2,000 keys")
    ap.add_argument("--n", type=int, default=20_000)
    args = ap.parse_args(argv)
    r = run(2_000 if args.quick else args.n)
    return finish(r, report(r), args.json)


if __name__ == "__main__":
    raise SystemExit(main())
