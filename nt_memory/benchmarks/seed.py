"""``nt-memory bench``: the seed's Performance Targets table, measured here, with a verdict per row
and the alternatives measured in the same run.

Rows: ``l1_get`` (Python get on a table of small values; vs dict, ``multiprocessing.Manager().dict()``
and LMDB), ``position_lookup_njit`` (``l1_lookup`` inside nopython code), ``vector_search`` (top-10,
128-d clustered; vs raw hnswlib and numpy brute force), ``memory_footprint`` (shared memory + the
index for observations with a 128-d embedding, per million), ``cross_agent_pubsub`` (publish in one
process, recv in another; vs ``multiprocessing.Queue``). ``--quick`` runs in about half a minute on
smaller sizes; the full run takes minutes.

    nt-memory bench [seed] [--quick] [--json PATH] [--plot PATH]
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import secrets
import shutil
import sys
import tempfile
import time

import lmdb
import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from nt_memory.benchmarks import suite_parser
from nt_memory.kernels._jit import jit
from nt_memory.kernels.atomics import clock_ns
from nt_memory.tiers.l1 import l1_lookup
from nt_memory.timing import SEED_TARGETS, meets, percentiles, time_calls


def process_memory(pid: int, lmdb_path: str | None = None) -> dict:
    """Anonymous RSS and shared-memory RSS of ``pid`` (bytes), and its resident LMDB file pages."""
    out = {"anon_bytes": 0, "shmem_bytes": 0, "lmdb_file_bytes": 0}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            field, _, rest = line.partition(":")
            if field == "Anonymous":
                out["anon_bytes"] = int(rest.split()[0]) * 1024
            elif field == "RssShmem":
                out["shmem_bytes"] = int(rest.split()[0]) * 1024
    if lmdb_path:
        current = None
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                head = line.split()
                if head and "-" in head[0] and len(head) >= 5:
                    current = head[5] if len(head) > 5 else None
                elif head and head[0] == "Rss:" and current and current.startswith(lmdb_path):
                    out["lmdb_file_bytes"] += int(head[1]) * 1024
    return out


def shm_bytes(name: str) -> dict:
    """Allocated bytes of each of the system's ``/dev/shm`` segments, by part."""
    from nt_memory.shm.system import PREFIX

    parts: dict[str, int] = {}
    prefix = f"{PREFIX}{name}."
    for entry in os.scandir("/dev/shm"):
        if entry.name.startswith(prefix):
            part = entry.name[len(prefix) :].split(".")[0]
            parts[part] = parts.get(part, 0) + entry.stat().st_blocks * 512
    return parts


@jit
def njit_lookup_timed(handle, hashes, keys, key_lens, order, out, lat):
    """Per-lookup latency inside nopython code (a vDSO clock pair per lookup); returns hits."""
    found = 0
    for j in range(len(order)):
        i = order[j]
        t0 = clock_ns()
        r = l1_lookup(handle, hashes[i], keys[i, : key_lens[i]], out)
        lat[j] = clock_ns() - t0
        found += r >= 0
    return found


@jit
def njit_lookup_batch(handle, hashes, keys, key_lens, order):
    """Lookups back to back in nopython code (no per-call timing); returns hits."""
    out = np.zeros(65_536 + 16, np.uint8)
    found = 0
    for j in range(len(order)):
        i = order[j]
        found += l1_lookup(handle, hashes[i], keys[i, : key_lens[i]], out) >= 0
    return found


@jit
def clock_pair_timed(n, lat):
    for j in range(n):
        t0 = clock_ns()
        lat[j] = clock_ns() - t0


def key_arrays(cache, ns: str, keys: list[str]):
    kb = [cache.key_array(ns, k) for k in keys]
    karr = np.zeros((len(keys), max(len(k) for k in kb)), np.uint8)
    for i, k in enumerate(kb):
        karr[i, : len(k)] = k
    klen = np.array([len(k) for k in kb], np.int64)
    hashes = np.array([cache.key_hash(ns, k) for k in keys], np.int64)
    return hashes, karr, klen


# ---------------------------------------------------------------------------------------- rows
def row_l1(n_keys: int, calls: int, mgr_calls: int, samples: dict, progress: Progress) -> dict:
    from nt_memory.tiers.l1 import HotCache

    value = b"v" * 32
    cache = HotCache.create(f"bn{secrets.token_hex(3)}", max_entries=n_keys)
    try:
        keys = [f"key{i}" for i in range(n_keys)]
        task = progress.add_task("L1: loading keys", total=n_keys)
        for i, k in enumerate(keys):
            cache.put("agent", k, value)
            if i % 10_000 == 0:
                progress.update(task, completed=i)
        progress.update(task, completed=n_keys)
        order = np.random.default_rng(7).integers(0, n_keys, calls)
        args = [("agent", keys[i]) for i in order]
        time_calls(cache.get, args[:5000])
        lat = time_calls(cache.get, args)
        samples["l1_get_ns"] = lat
        d = {("agent", k): value for k in keys}
        row = {"ours": percentiles(lat), "unit": "ns"}
        row["dict_get"] = percentiles(time_calls(lambda ns, k: d.get((ns, k)), args))
        with tempfile.TemporaryDirectory() as tmp:
            env = lmdb.open(tmp, map_size=1 << 30)
            with env.begin(write=True) as txn:
                for k in keys:
                    txn.put(b"agent\0" + k.encode(), value)
            with env.begin() as txn:
                row["lmdb_get"] = percentiles(time_calls(lambda ns, k: txn.get(ns.encode() + b"\0" + k.encode()), args))
            env.close()
        with mp.get_context("spawn").Manager() as manager:
            md = manager.dict({f"agent/{k}": value for k in keys[: min(n_keys, 5000)]})
            margs = [(f"agent/{keys[i % min(n_keys, 5000)]}",) for i in order[:mgr_calls]]
            row["manager_dict_get"] = percentiles(time_calls(md.get, margs))
        row["timer_pair"] = percentiles(time_calls(lambda: None, [()] * min(calls, 50_000)))
        # the njit row shares this table
        hashes, karr, klen = key_arrays(cache, "agent", keys)
        out = np.zeros(cache.max_value_bytes + 8, np.uint8)
        lat = np.zeros(calls, np.int64)
        handle = cache.njit_handle()
        hot = (np.arange(calls) % 16).astype(np.int64)
        njit_lookup_timed(handle, hashes, karr, klen, hot[:100], out, lat)
        njit_lookup_timed(handle, hashes, karr, klen, hot, out, lat)
        samples["njit_lookup_ns"] = lat.copy()
        njit_row = {"ours": percentiles(lat), "unit": "ns", "keys": "16 hot keys (a handler's own positions)"}
        njit_lookup_timed(handle, hashes, karr, klen, order.astype(np.int64), out, lat)
        njit_row["uniform_over_table"] = percentiles(lat)
        clock_pair_timed(calls, lat)
        njit_row["clock_pair_alone"] = percentiles(lat)
        return {"l1_get": row | {"keys": n_keys}, "position_lookup_njit": njit_row | {"table_keys": n_keys}}
    finally:
        cache.close()
        cache.unlink()


def row_vectors(n: int, queries: int, samples: dict, progress: Progress) -> dict:
    import hnswlib

    from nt_memory import CacheConfig, MemoryConfig, MemorySystem
    from nt_memory.tiers.l2 import DEFAULT_EF, DEFAULT_M, EF_CONSTRUCTION

    dim = 128
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(max(10, n // 400), dim)).astype(np.float32) * 3
    data = (centers[rng.integers(0, len(centers), n)] + rng.normal(size=(n, dim)).astype(np.float32)).astype(np.float32)
    qs = data[rng.integers(0, n, queries)] + rng.normal(size=(queries, dim)).astype(np.float32) * 0.5
    data_n = data / np.linalg.norm(data, axis=1, keepdims=True)
    truth, brute = [], []
    for q in qs:
        t0 = time.perf_counter_ns()
        truth.append(set(np.argpartition(-(data_n @ (q / np.linalg.norm(q))), 10)[:10].tolist()))
        brute.append(time.perf_counter_ns() - t0)
    root = tempfile.mkdtemp(prefix="nt-memory-bench-")
    mem = MemorySystem.open(
        MemoryConfig(
            name=f"bv{secrets.token_hex(3)}",
            storage_path=root,
            embedding_dim=dim,
            cache_config=CacheConfig(max_entries=n + n // 4 + 1024, arena_bytes=max(1 << 20, 128 * n)),
            max_memory_bytes=1 << 40,
        )
    )
    anon_before = process_memory(os.getpid())["anon_bytes"]
    try:
        task = progress.add_task(f"vectors: {n:,} puts with embeddings", total=n)
        for i in range(n):
            mem.put("obs", f"o{i}", {"i": i}, embedding=data[i])
            if i % 5000 == 0:
                progress.update(task, completed=i)
        progress.update(task, completed=n)
        task = progress.add_task("vectors: building the index", total=None)
        started = time.perf_counter()
        mem.l2.sync()
        build = time.perf_counter() - started
        progress.update(task, total=1, completed=1)
        lat, hits = [], 0
        for q, t in zip(qs, truth, strict=True):
            t0 = time.perf_counter_ns()
            res = mem.search_similar("obs", q, top_k=10)
            lat.append(time.perf_counter_ns() - t0)
            hits += len({int(h.key[1:]) for h in res} & t)
        samples["vector_search_us"] = np.asarray(lat) / 1e3
        # Footprint, measured here: the system's allocated /dev/shm and this process's anonymous
        # RSS growth (the puts, then the index). Segments whose size does not grow with the data
        # (journal, root, coordination) are counted once when projecting to a million.
        shm = shm_bytes(mem.system.name)
        anon_growth = process_memory(os.getpid())["anon_bytes"] - anon_before
        growing = shm.get("embed", 0) + shm.get("arena", 0) + shm.get("l1", 0)
        fixed = sum(shm.values()) - growing
        per_obs = (growing + anon_growth) / n
    finally:
        mem.close()
        mem.unlink()
        shutil.rmtree(root, ignore_errors=True)
    footprint_parts = {k: v for k, v in shm.items()} | {"anon_growth": anon_growth, "fixed_shm": fixed}
    raw = hnswlib.Index(space="cosine", dim=dim)
    raw.init_index(n, M=DEFAULT_M, ef_construction=EF_CONSTRUCTION)
    raw.add_items(data, np.arange(n))
    raw.set_ef(DEFAULT_EF)
    rlat, rhits = [], 0
    for q, t in zip(qs, truth, strict=True):
        t0 = time.perf_counter_ns()
        lab, _ = raw.knn_query(q, k=10, num_threads=1)
        rlat.append(time.perf_counter_ns() - t0)
        rhits += len(set(lab[0].tolist()) & t)
    vec = {
        "ours": percentiles(lat, "us") | {"recall_at_10": hits / (10 * queries)},
        "unit": "us",
        "vectors": n,
        "raw_hnswlib": percentiles(rlat, "us") | {"recall_at_10": rhits / (10 * queries)},
        "numpy_brute_force": percentiles(brute, "us"),
        "index_build_s": build,
    }
    foot = {
        "ours": {"per_1m": (per_obs * 1_000_000 + fixed) / (1 << 20), "bytes_per_obs": per_obs},
        "unit": "MiB",
        "measured_at": n,
        "parts_bytes": footprint_parts,
        "note": "measured at n (allocated /dev/shm + this process's anonymous RSS growth), projected to 1M; "
        "nt-memory bench vectors --full measures 1M itself",
    }
    return {"vector_search": vec, "memory_footprint": foot}


def _receiver(name, path, n, ready, out):
    from nt_memory import MemoryConfig, MemorySystem

    mem = MemorySystem.open(MemoryConfig(name=name, storage_path=path), label="bench-recv")
    sub = mem.subscribe("bench")
    ready.set()
    lat = []
    while len(lat) < n:
        m = sub.recv(timeout=5)
        if m is None:
            break
        lat.append(time.perf_counter_ns() - int.from_bytes(m[:8], "little"))
    out.put((lat, sub.dropped))
    mem.close()


def _queue_receiver(q, n, out):
    lat = []
    for _ in range(n):
        m = q.get()
        lat.append(time.perf_counter_ns() - int.from_bytes(m[:8], "little"))
    out.put(lat)


def _paced(send, n):
    pad = b"m" * 56
    for _ in range(n):
        send(time.perf_counter_ns().to_bytes(8, "little") + pad)
        t = time.perf_counter() + 0.0005
        while time.perf_counter() < t:
            pass


def row_pubsub(n: int, samples: dict) -> dict:
    from nt_memory import MemoryConfig, MemorySystem

    ctx = mp.get_context("spawn")
    root = tempfile.mkdtemp()
    name = f"bp{secrets.token_hex(3)}"
    mem = MemorySystem.open(MemoryConfig(name=name, storage_path=root))
    try:
        ready, out = ctx.Event(), ctx.Queue()
        p = ctx.Process(target=_receiver, args=(name, root, n, ready, out))
        p.start()
        ready.wait(120)
        time.sleep(0.2)
        _paced(lambda b: mem.publish("bench", b), n)
        lat, dropped = out.get(timeout=120)
        p.join(30)
    finally:
        mem.close()
        mem.unlink()
        shutil.rmtree(root, ignore_errors=True)
    samples["pubsub_us"] = np.asarray(lat) / 1e3
    q, out = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=_queue_receiver, args=(q, n, out))
    p.start()
    time.sleep(0.5)
    _paced(q.put, n)
    qlat = out.get(timeout=120)
    p.join(30)
    return {
        "cross_agent_pubsub": {
            "ours": percentiles(lat, "us") | {"dropped": dropped},
            "unit": "us",
            "messages": n,
            "multiprocessing_queue": percentiles(qlat, "us"),
            "subscriber": "sleeping (futex)",
        }
    }


def run(quick: bool) -> tuple[dict, dict]:
    samples: dict = {}
    results: dict = {
        "machine": f"{platform.machine()}, {mp.cpu_count()} cores, Python {platform.python_version()}",
        "quick": quick,
    }
    redis = shutil.which("redis-server")
    results["redis"] = "not measured: no redis-server on PATH" if not redis else "not measured: needs redis-py"
    with Progress(transient=True) as progress:
        results |= row_l1(
            20_000 if quick else 100_000, 50_000 if quick else 200_000, 1000 if quick else 10_000, samples, progress
        )
        results |= row_vectors(10_000 if quick else 100_000, 200 if quick else 500, samples, progress)
        results |= row_pubsub(2000 if quick else 20_000, samples)
    for row, (stat, target, unit) in SEED_TARGETS.items():
        value = results[row]["ours"][stat]
        results[row]["target"] = {"stat": stat, "value": target, "unit": unit}
        results[row]["verdict"] = "PASS" if meets(row, value) else "MISS"
    return results, samples


def render(results: dict) -> Table:
    t = Table(title=f"nt-memory performance targets ({results['machine']}{', quick' if results['quick'] else ''})")
    for col in ("component", "target", "measured", "verdict", "beside it, same run"):
        t.add_column(col)
    r = results

    def f(x, u):
        return f"{x:,.0f} {u}" if x >= 10 else f"{x:.2f} {u}"

    t.add_row(
        "L1 cache lookup (Python get)",
        "< 1 µs p99",
        f"p50 {f(r['l1_get']['ours']['p50'], 'ns')}, p99 {f(r['l1_get']['ours']['p99'], 'ns')}",
        r["l1_get"]["verdict"],
        f"dict.get p50 {f(r['l1_get']['dict_get']['p50'], 'ns')}; LMDB {f(r['l1_get']['lmdb_get']['p50'], 'ns')}; "
        f"Manager().dict() {f(r['l1_get']['manager_dict_get']['p50'] / 1e3, 'µs')}",
    )
    t.add_row(
        "Position lookup (@njit)",
        "< 100 ns p99",
        f"p50 {f(r['position_lookup_njit']['ours']['p50'], 'ns')}, "
        f"p99 {f(r['position_lookup_njit']['ours']['p99'], 'ns')}",
        r["position_lookup_njit"]["verdict"],
        f"uniform over the table p99 {f(r['position_lookup_njit']['uniform_over_table']['p99'], 'ns')}; "
        f"clock pair {f(r['position_lookup_njit']['clock_pair_alone']['p50'], 'ns')}",
    )
    v = r["vector_search"]
    t.add_row(
        f"Vector search ({v['vectors']:,} × 128-d)",
        "< 1 ms p95",
        f"p95 {f(v['ours']['p95'], 'µs')}, recall@10 {v['ours']['recall_at_10']:.3f}",
        v["verdict"],
        f"raw hnswlib p95 {f(v['raw_hnswlib']['p95'], 'µs')}; brute force p95 {f(v['numpy_brute_force']['p95'], 'µs')}",
    )
    m = r["memory_footprint"]
    parts = m["parts_bytes"]
    t.add_row(
        "Memory footprint",
        "< 1 GB / 1M obs",
        f"{f(m['ours']['per_1m'], 'MiB')} per 1M ({m['ours']['bytes_per_obs']:,.0f} B/obs measured at "
        f"{m['measured_at']:,})",
        m["verdict"],
        "at {:,}: embedding log {:,.0f}, arena {:,.0f}, table {:,.0f}, RSS growth {:,.0f} MiB".format(
            m["measured_at"],
            parts.get("embed", 0) / (1 << 20),
            parts.get("arena", 0) / (1 << 20),
            parts.get("l1", 0) / (1 << 20),
            parts["anon_growth"] / (1 << 20),
        ),
    )
    p = r["cross_agent_pubsub"]
    t.add_row(
        "Cross-agent latency (pub/sub)",
        "< 5 ms p99",
        f"p50 {f(p['ours']['p50'], 'µs')}, p99 {f(p['ours']['p99'], 'µs')}, dropped {p['ours']['dropped']}",
        p["verdict"],
        f"multiprocessing.Queue p99 {f(p['multiprocessing_queue']['p99'], 'µs')}",
    )
    return t


def plot(samples: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(samples), figsize=(4 * len(samples), 3.2))
    for ax, (k, v) in zip(np.atleast_1d(axes), samples.items(), strict=True):
        v = np.asarray(v, dtype=np.float64)
        ax.hist(np.clip(v, None, np.percentile(v, 99.5)), bins=60)
        ax.set_title(f"{k} (clipped at p99.5)", fontsize=9)
        ax.set_yscale("log")
        ax.set_ylabel("calls")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = suite_parser("seed", __doc__, "smaller sizes: about half a minute")
    ap.add_argument("--plot", default=None, metavar="PATH", help="save latency histograms as PNG (needs matplotlib)")
    args = ap.parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=170)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("nt-memory: --plot needs matplotlib: pip install 'nt-memory[bench]'", file=sys.stderr)
            return 1
    results, samples = run(args.quick)
    console.print(render(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    if args.plot:
        plot(samples, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
