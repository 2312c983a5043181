"""Vector search report: build time, top-10 search p50/p95/p99 and recall@10 for MemorySystem's
L2 beside raw hnswlib (same M, ef_construction, ef) and numpy brute force, on clustered (Gaussian
mixture) and uniform 128-d vectors; and the memory footprint of N observations.

    nt-memory bench search [--quick] [--sizes 100000,1000000] [--footprint 1000000] [--json PATH]
"""

from __future__ import annotations

import os
import resource
import secrets
import shutil
import tempfile
import time

import hnswlib
import numpy as np
from rich.progress import Progress

from nt_memory import CacheConfig, MemoryConfig, MemorySystem
from nt_memory.benchmarks import finish, suite_parser
from nt_memory.tiers.l2 import DEFAULT_EF, DEFAULT_M, EF_CONSTRUCTION
from nt_memory.timing import percentiles

DIM = 128
QUERIES = 500


def dataset(kind: str, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return rng.random((n, DIM), dtype=np.float32)
    centers = rng.normal(size=(max(10, n // 400), DIM)).astype(np.float32) * 3
    return (centers[rng.integers(0, len(centers), n)] + rng.normal(size=(n, DIM)).astype(np.float32)).astype(np.float32)


def brute_topk(data_n: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    qn = q / np.linalg.norm(q)
    return np.argpartition(-(data_n @ qn), k)[:k]


def run_size(kind: str, n: int, progress: Progress) -> dict:
    data = dataset(kind, n)
    queries = (
        dataset(kind, QUERIES, seed=1)
        if kind == "uniform"
        else data[np.random.default_rng(2).integers(0, n, QUERIES)]
        + np.random.default_rng(3).normal(size=(QUERIES, DIM)).astype(np.float32) * 0.5
    )
    data_n = data / np.linalg.norm(data, axis=1, keepdims=True)
    r: dict = {"kind": kind, "n": n, "dim": DIM, "M": DEFAULT_M, "ef": DEFAULT_EF, "ef_construction": EF_CONSTRUCTION}
    # exact answers and brute-force latency
    truth, lat = [], []
    for q in queries:
        t_ns = time.perf_counter_ns()
        truth.append(set(brute_topk(data_n, q, 10).tolist()))
        lat.append(time.perf_counter_ns() - t_ns)
    r["numpy_brute_force"] = percentiles(lat, "us")
    # raw hnswlib
    task = progress.add_task(f"raw hnswlib build {kind} {n:,}", total=n)
    idx = hnswlib.Index(space="cosine", dim=DIM)
    idx.init_index(n, M=DEFAULT_M, ef_construction=EF_CONSTRUCTION)
    t0 = time.perf_counter()
    for s in range(0, n, 10_000):
        idx.add_items(data[s : s + 10_000], np.arange(s, min(n, s + 10_000)))
        progress.update(task, completed=min(n, s + 10_000))
    r["raw_build_s"] = time.perf_counter() - t0
    idx.set_ef(DEFAULT_EF)
    lat, hits = [], 0
    for q, t in zip(queries, truth, strict=True):
        t_ns = time.perf_counter_ns()
        lab, _ = idx.knn_query(q, k=10, num_threads=1)
        lat.append(time.perf_counter_ns() - t_ns)
        hits += len(set(lab[0].tolist()) & t)
    r["raw_hnswlib"] = percentiles(lat, "us") | {"recall_at_10": hits / (10 * len(queries))}
    del idx
    # nt-memory
    root = tempfile.mkdtemp(prefix="nt-memory-vbench-")
    mem = MemorySystem.open(
        MemoryConfig(
            name=f"vb{secrets.token_hex(3)}",
            storage_path=root,
            embedding_dim=DIM,
            cache_config=CacheConfig(max_entries=max(1024, n)),
            journal_bytes=64 << 20,
            max_memory_bytes=1 << 40,
        )
    )
    try:
        task = progress.add_task(f"nt-memory puts {kind} {n:,}", total=n)
        t0 = time.perf_counter()
        for i in range(n):
            mem.put("obs", f"o{i}", i, embedding=data[i])
            if i % 10_000 == 0:
                progress.update(task, completed=i)
        progress.update(task, completed=n)
        r["put_with_embedding_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        mem.l2.sync()
        r["index_build_s"] = time.perf_counter() - t0
        lat, hits = [], 0
        for q, t in zip(queries, truth, strict=True):
            t_ns = time.perf_counter_ns()
            res = mem.search_similar("obs", q, top_k=10)
            lat.append(time.perf_counter_ns() - t_ns)
            hits += len({int(h.key[1:]) for h in res} & t)
        r["nt_memory"] = percentiles(lat, "us") | {"recall_at_10": hits / (10 * len(queries))}
        lat = []
        for q in queries:
            t_ns = time.perf_counter_ns()
            mem.search_similar(None, q, top_k=10)
            lat.append(time.perf_counter_ns() - t_ns)
        r["nt_memory_all_namespaces"] = percentiles(lat, "us")
    finally:
        mem.close()
        mem.unlink()
        shutil.rmtree(root, ignore_errors=True)
    r["hnsw_vs_brute_force_p50"] = r["numpy_brute_force"]["p50"] / r["nt_memory"]["p50"]
    r["wrapper_overhead_p50"] = r["nt_memory"]["p50"] / r["raw_hnswlib"]["p50"] - 1
    return r


def footprint(n: int, progress: Progress) -> dict:
    """shm + RSS for n observations: a small JSON value and a 128-d embedding each."""
    root = tempfile.mkdtemp(prefix="nt-memory-fp-")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    mem = MemorySystem.open(
        MemoryConfig(
            name=f"fp{secrets.token_hex(3)}",
            storage_path=root,
            embedding_dim=DIM,
            cache_config=CacheConfig(max_entries=n, arena_bytes=n * 96),
            max_memory_bytes=1 << 40,
        )
    )
    try:
        data = dataset("clustered", n)
        task = progress.add_task(f"footprint: {n:,} observations", total=n)
        for i in range(n):
            mem.put("obs", f"o{i}", {"px": 100.0 + i % 7, "qty": i % 13}, embedding=data[i])
            if i % 10_000 == 0:
                progress.update(task, completed=i)
        del data
        mem.l2.sync()
        mem.flush()
        s = mem.stats()
        shm = {f: os.path.getsize(f"/dev/shm/{f}") for f in os.listdir("/dev/shm") if f.startswith(f"ntm.{mem.name}.")}
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        idx = mem.l2.index
        index_bytes = idx.get_current_count() * (DIM * 4 + DEFAULT_M * 2 * 4 + 8 + 4) if idx is not None else 0
        return {
            "n": n,
            "shm_bytes": sum(shm.values()),
            "shm_by_part": {
                "l1_table": sum(v for k, v in shm.items() if k.endswith(".l1")),
                "l1_arena": sum(v for k, v in shm.items() if k.endswith(".arena")),
                "journal": sum(v for k, v in shm.items() if k.endswith(".journal")),
                "embedding_log": sum(v for k, v in shm.items() if ".embed" in k),
                "root": sum(v for k, v in shm.items() if k.endswith(".root")),
            },
            "hnsw_index_bytes_estimate": index_bytes,
            "process_peak_rss_bytes": rss,
            "process_rss_before_bytes": rss0,
            "l3_bytes": s["l3"]["used_bytes"],
        }
    finally:
        mem.close()
        mem.unlink()
        shutil.rmtree(root, ignore_errors=True)


def report(results: list[dict], fp: dict | None) -> str:
    lines = ["Vector search, top-10, cosine, 128-d; latencies in microseconds per query (one thread)"]
    lines.append(f"{'data':10} {'n':>9} {'who':24} {'p50':>8} {'p95':>8} {'p99':>8} {'recall@10':>10}")
    for r in results:
        for who in ("nt_memory", "raw_hnswlib", "numpy_brute_force"):
            x = r[who]
            rec = f"{x['recall_at_10']:.3f}" if "recall_at_10" in x else "1.000"
            lat = f"{x['p50']:8.0f} {x['p95']:8.0f} {x['p99']:8.0f}"
            lines.append(f"{r['kind']:10} {r['n']:9,} {who:24} {lat} {rec:>10}")
        lines.append(
            f"{'':10} {'':9} build: raw {r['raw_build_s']:.1f}s, nt-memory puts {r['put_with_embedding_s']:.1f}s + "
            f"index {r['index_build_s']:.1f}s; HNSW {r['hnsw_vs_brute_force_p50']:.0f}x faster than brute force; "
            f"wrapper overhead {r['wrapper_overhead_p50']:+.0%} (p50)"
        )
    if fp:
        mb = 1 << 20
        lines.append("")
        lines.append(f"footprint of {fp['n']:,} observations (small JSON + 128-d embedding):")
        lines.append(
            f"  shared memory {fp['shm_bytes'] / mb:,.0f} MiB: "
            + ", ".join(f"{k} {v / mb:,.0f}" for k, v in fp["shm_by_part"].items())
        )
        lines.append(
            f"  hnswlib index (estimate) {fp['hnsw_index_bytes_estimate'] / mb:,.0f} MiB; "
            f"peak RSS of the process {fp['process_peak_rss_bytes'] / mb:,.0f} MiB; LMDB {fp['l3_bytes'] / mb:,.0f} MiB"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = suite_parser("search", __doc__, "20k clustered vectors, no footprint")
    ap.add_argument("--sizes", default="100000", help="comma-separated sizes; 0 for none")
    ap.add_argument("--kinds", default="clustered,uniform")
    ap.add_argument("--footprint", type=int, default=0)
    args = ap.parse_args(argv)
    sizes, kinds = ("20000", "clustered") if args.quick else (args.sizes, args.kinds)
    results = []
    fp = None
    with Progress(transient=True) as progress:
        for n in (int(x) for x in sizes.split(",") if x and int(x) > 0):
            for kind in kinds.split(","):
                results.append(run_size(kind, n, progress))
        if args.footprint and not args.quick:
            fp = footprint(args.footprint, progress)
    return finish({"search": results, "footprint": fp}, report(results, fp), args.json)


if __name__ == "__main__":
    raise SystemExit(main())
