"""Observations with embeddings at scale: footprint and search, measured (issue 12's tables).

    nt-memory bench vectors [--quick] [--full] [--n N] [--json PATH]
    python -m bench.vectors ...                  # the same, from a checkout

A writer process (the system's creator, hence its flusher) stores N observations through
``MemorySystem.put`` (a small JSON dict plus a clustered 128-d float32 embedding), timing each put,
and flushes. A searcher process attaches by name and searches: it takes the search role and holds
the index. A second searcher attaches and searches too: the first answers it over shared-memory
topics (``index_sharing="shared"``, the default), so it holds no index; its searches are timed while
the holder is otherwise idle. Footprint, from the kernel, not from a formula: each process's anonymous RSS
(``/proc/<pid>/smaps_rollup``), the allocated bytes of the system's ``/dev/shm`` segments, and
beside them the LMDB file pages resident in each process. The peer: a plain ``dict`` of dicts plus
one ``ndarray`` per row in one process, and the payload's own size. Search: ``search_similar`` in
the searcher beside raw hnswlib built there from the same vectors with the same M,
ef_construction and ef, and numpy brute force; recall@10 against the exact answers.

Default 100k observations; ``--full`` 1M (about 15 minutes on 2 cores); ``--quick`` 20k.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import secrets
import shutil
import tempfile
import time

import numpy as np

from nt_memory.benchmarks import finish, suite_parser
from nt_memory.benchmarks.seed import process_memory, shm_bytes
from nt_memory.timing import percentiles

CTX = mp.get_context("spawn")
DIM = 128
QUERIES = 300
TOP_K = 10
SEED = 0


def dataset(n: int, dim: int = DIM, seed: int = SEED) -> np.ndarray:
    """A Gaussian mixture (real embeddings cluster), one cluster per 400 rows."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(max(10, n // 400), dim)).astype(np.float32) * 3
    labels = rng.integers(0, len(centers), n)
    out = np.empty((n, dim), np.float32)
    for lo in range(0, n, 100_000):  # in slices: one normal() of 1M x 128 doubles is 1 GB
        hi = min(n, lo + 100_000)
        out[lo:hi] = centers[labels[lo:hi]] + rng.normal(size=(hi - lo, dim)).astype(np.float32)
    return out


def queries(data: np.ndarray, count: int = QUERIES) -> np.ndarray:
    rng = np.random.default_rng(SEED + 1)
    noise = rng.normal(size=(count, data.shape[1])).astype(np.float32) * 0.5
    return (data[rng.integers(0, len(data), count)] + noise).astype(np.float32)


def observation(i: int) -> dict:
    return {"i": i, "px": 100.0 + (i % 977) / 100, "side": "buy" if i % 2 else "sell"}


def exact_topk(data: np.ndarray, qs: np.ndarray, k: int = TOP_K) -> tuple[list[set], list[int]]:
    """Cosine top-k by brute force, and the time each query took (ns)."""
    norms = np.linalg.norm(data, axis=1)
    norms[norms == 0] = 1
    unit = data / norms[:, None]
    truth, lat = [], []
    for q in qs:
        t0 = time.perf_counter_ns()
        scores = unit @ (q / np.linalg.norm(q))
        truth.append(set(np.argpartition(-scores, k)[:k].tolist()))
        lat.append(time.perf_counter_ns() - t0)
    return truth, lat


# ------------------------------------------------------------------------------ measuring


def _config(name: str, path: str, n: int):
    from nt_memory import CacheConfig, MemoryConfig

    # Sized for the data, as a user would: segments are allocated in full when created (so a full
    # /dev/shm fails at open, never with SIGBUS later), so their configured size is their cost.
    # An observation takes 64 arena bytes here; 128 leaves room for updates.
    return MemoryConfig(
        name=name,
        storage_path=path,
        embedding_dim=DIM,
        cache_config=CacheConfig(max_entries=n + n // 4 + 1024, arena_bytes=max(1 << 20, 128 * n)),
        max_memory_bytes=64 << 30,
        l3_map_bytes=8 << 30,
    )


def _writer(name: str, path: str, n: int, out, done) -> None:
    from nt_memory import MemorySystem

    data = dataset(n)
    mem = MemorySystem.open(_config(name, path, n), label="bench-vectors-writer")
    try:
        lat = np.empty(n, np.int64)
        clock = time.perf_counter_ns
        t0 = time.perf_counter()
        for i in range(n):
            obs = observation(i)
            s = clock()
            mem.put("obs", f"o{i}", obs, embedding=data[i])
            lat[i] = clock() - s
        put_s = time.perf_counter() - t0
        del data  # the benchmark's, not the system's
        mem.flush(600)
        out.put(("writer", {"pid": os.getpid(), "put": percentiles(lat, "us"), "puts_per_s": n / put_s}))
        done.wait(3600)
    finally:
        mem.close()


def _searcher(name: str, path: str, n: int, label: str, holder: bool, out, done) -> None:
    """The first searcher holds the index (the search role) and is timed beside raw hnswlib; the
    second is answered by it (``index_sharing="shared"``, the default) and holds no index."""
    from nt_memory import MemorySystem

    mem = MemorySystem.open(_config(name, path, n), label=f"bench-vectors-{label}")
    try:
        data = dataset(n)
        qs = queries(data)
        t0 = time.perf_counter()
        mem.search_similar("obs", qs[0], top_k=TOP_K)  # the holder builds (or loads) the index
        r: dict = {"pid": os.getpid(), "index_build_s": time.perf_counter() - t0}
        del data  # the dataset is the benchmark's, not the system's: out of the footprint
        out.put((f"{label}_ready", os.getpid()))
        done[0].wait(3600)  # the parent reads our footprint now, then lets us time searches
        if holder:
            r |= _time_against_raw(mem, n, qs)
        else:
            lat, keys = _time_searches(mem, qs)
            st = mem.stats()["l2"]
            r |= {
                "served": percentiles(lat, "us"),
                "keys": keys,
                "serves": st["this_process_serves"],
                "holds_index": mem.l2.index is not None,
                "remote_overhead_p50_us": st["remote_overhead_p50_us"],
            }
        out.put((label, r))
        done[1].wait(3600)
    finally:
        mem.close()


def _time_searches(mem, qs) -> tuple[list[int], list[list[int]]]:
    """Each query's ``search_similar`` time (ns) and the observation numbers it found; two
    passes, the second kept (both warm)."""
    clock = time.perf_counter_ns
    for _ in range(2):
        lat, keys = [], []
        for q in qs:
            s = clock()
            hits = mem.search_similar("obs", q, top_k=TOP_K)
            lat.append(clock() - s)
            keys.append([int(h.key[1:]) for h in hits])
    return lat, keys


def _time_against_raw(mem, n: int, qs) -> dict:
    import hnswlib

    # First the same searches the second process just had answered, here, at once: the two
    # p50s are then minutes apart no more (this machine's speed swings).
    right_after, _ = _time_searches(mem, qs)
    data = dataset(n)
    p = mem.l2.params
    raw = hnswlib.Index(space="cosine", dim=DIM)
    raw.init_index(n, M=p.m, ef_construction=p.ef_construction)
    t0 = time.perf_counter()
    raw.add_items(data, np.arange(n))
    r: dict = {"raw_build_s": time.perf_counter() - t0}
    raw.set_ef(p.ef)
    truth, brute = exact_topk(data, qs)
    clock = time.perf_counter_ns

    def ours(q):
        s = clock()
        hits = mem.search_similar("obs", q, top_k=TOP_K)
        ours_lat.append(clock() - s)
        return {int(h.key[1:]) for h in hits}

    def theirs(q):
        s = clock()
        labels, _ = raw.knn_query(q, k=TOP_K, num_threads=1)
        raw_lat.append(clock() - s)
        return set(labels[0].tolist())

    for _ in range(2):  # the second pass is the one kept: both warm
        ours_lat: list[float] = []
        raw_lat: list[float] = []
        ours_hits = raw_hits = 0
        for i, (q, t) in enumerate(zip(qs, truth, strict=True)):
            # The same query to both, each going first every other time: on this machine whichever
            # searched second was faster (ours always first: 1.23x raw at 20k; alternating: 1.10x).
            if i % 2:
                raw_hits += len(theirs(q) & t)
                ours_hits += len(ours(q) & t)
            else:
                ours_hits += len(ours(q) & t)
                raw_hits += len(theirs(q) & t)
    return r | {
        "ef": p.ef,
        "M": p.m,
        "ef_construction": p.ef_construction,
        "truth": [sorted(t) for t in truth],
        "ours_right_after_served": percentiles(right_after, "us"),
        "ours": percentiles(ours_lat, "us") | {"recall_at_10": ours_hits / (TOP_K * len(qs))},
        "raw_hnswlib": percentiles(raw_lat, "us") | {"recall_at_10": raw_hits / (TOP_K * len(qs))},
        "numpy_brute_force": percentiles(brute, "us") | {"recall_at_10": 1.0},
    }


BULK_BATCH = 10_000


def _bulk(n: int, out) -> None:
    """``put_many`` of ``n`` observations into a system of its own (the loader is its flusher)."""
    from nt_memory import MemorySystem

    data = dataset(n)
    items = [(f"o{i}", observation(i)) for i in range(n)]
    name, path = f"bvb{secrets.token_hex(3)}", tempfile.mkdtemp(prefix="nt-memory-bench-")
    mem = MemorySystem.open(_config(name, path, n), label="bench-vectors-bulk")
    try:
        t0 = time.perf_counter()
        for lo in range(0, n, BULK_BATCH):
            mem.put_many("obs", items[lo : lo + BULK_BATCH], embeddings=data[lo : lo + BULK_BATCH])
        out.put(("bulk", {"observations_per_s": n / (time.perf_counter() - t0), "batch": BULK_BATCH}))
        mem.flush(600)
    finally:
        mem.close()
        mem.unlink()
        shutil.rmtree(path, ignore_errors=True)


def _idle_member(name: str, path: str, n: int, out, done) -> None:
    """A process that only attaches: what any member costs before it holds anything."""
    from nt_memory import MemorySystem

    mem = MemorySystem.open(_config(name, path, n), label="bench-vectors-idle")
    try:
        mem.get("obs", "o0")
        out.put(("idle", os.getpid()))
        done.wait(3600)
    finally:
        mem.close()


def _peer(n: int, out) -> None:
    """The footprint of what a user would otherwise keep: a dict of dicts and one array per row."""
    data = dataset(n)
    before = process_memory(os.getpid())["anon_bytes"]
    store = {f"o{i}": {"value": observation(i), "embedding": data[i].copy()} for i in range(n)}
    out.put(process_memory(os.getpid())["anon_bytes"] - before)  # the dataset is in both readings
    del store, data


def run(n: int) -> dict:
    name = f"bvx{secrets.token_hex(3)}"
    path = tempfile.mkdtemp(prefix="nt-memory-bench-")
    lmdb_path = os.path.join(path, "data.mdb")
    out = CTX.Queue()
    writer_done, s1_done, s2_done = CTX.Event(), (CTX.Event(), CTX.Event()), (CTX.Event(), CTX.Event())
    procs = []
    got: dict = {}

    def take(key: str):
        while key not in got:
            k, v = out.get(timeout=7200)
            got[k] = v
        return got[key]

    try:
        w = CTX.Process(target=_writer, args=(name, path, n, out, writer_done))
        w.start()
        procs.append(w)
        r: dict = {"n": n, "dim": DIM, "writer": take("writer")}
        r["shm_bytes_by_part"] = shm_bytes(name)
        r["writer_after_flush"] = process_memory(r["writer"]["pid"], lmdb_path)
        idle_done = CTX.Event()
        idle = CTX.Process(target=_idle_member, args=(name, path, n, out, idle_done))
        idle.start()
        r["idle_member_memory"] = process_memory(take("idle"), lmdb_path)
        idle_done.set()
        idle.join(120)
        s1 = CTX.Process(target=_searcher, args=(name, path, n, "searcher", True, out, s1_done))
        s1.start()
        procs.append(s1)
        r["searcher_memory"] = process_memory(take("searcher_ready"), lmdb_path)
        s2 = CTX.Process(target=_searcher, args=(name, path, n, "searcher2", False, out, s2_done))
        s2.start()
        procs.append(s2)
        r["searcher2_memory"] = process_memory(take("searcher2_ready"), lmdb_path)
        r["shm_bytes_by_part"] = shm_bytes(name)
        s2_done[0].set()
        r["searcher2"] = take("searcher2")
        s1_done[0].set()
        r["search"] = take("searcher")
        truth = r["search"].pop("truth")
        served_keys = r["searcher2"].pop("keys")
        found = sum(len(set(k) & set(t)) for k, t in zip(served_keys, truth, strict=True))
        r["searcher2"]["served"]["recall_at_10"] = found / (TOP_K * len(truth))
        for ev in (writer_done, s1_done[1], s2_done[1]):
            ev.set()
        for p in procs:
            p.join(600)
        bulk = CTX.Process(target=_bulk, args=(min(n, 100_000), out))
        bulk.start()
        r["bulk"] = take("bulk") | {"n": min(n, 100_000)}
        bulk.join(600)
        peer = CTX.Process(target=_peer, args=(n, out))
        peer.start()
        r["peer_dict_bytes"] = out.get(timeout=3600)
        peer.join(120)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        from nt_memory import MemorySystem

        try:
            MemorySystem.open(_config(name, path, n)).unlink()
        finally:
            shutil.rmtree(path, ignore_errors=True)
    return r


# ------------------------------------------------------------------------------ report


def _mib(b: float) -> str:
    return f"{b / (1 << 20):8,.0f} MiB"


def report(r: dict) -> str:
    n = r["n"]
    shm = sum(r["shm_bytes_by_part"].values())
    w, s1, s2 = r["writer_after_flush"], r["searcher_memory"], r["searcher2_memory"]
    one = shm + w["anon_bytes"] + s1["anon_bytes"]
    lmdb = max(w["lmdb_file_bytes"], s1["lmdb_file_bytes"])
    payload = n * (DIM * 4 + len(json.dumps(observation(n // 2), separators=(",", ":"))))
    parts = ", ".join(f"{k} {v / n:,.0f}" for k, v in sorted(r["shm_bytes_by_part"].items()))
    lines = [
        f"footprint of {n:,} observations (a small JSON dict + {DIM}-d float32), measured; bytes / observation",
        f"  /dev/shm allocated          {_mib(shm)}  {shm / n:7,.0f}   ({parts})",
        f"  writer anon RSS (flushed)   {_mib(w['anon_bytes'])}  {w['anon_bytes'] / n:7,.0f}",
        f"    (a member that only attached: {_mib(r['idle_member_memory']['anon_bytes'])}: Python, numpy, numba)",
        f"  searcher anon RSS           {_mib(s1['anon_bytes'])}  {s1['anon_bytes'] / n:7,.0f}   "
        f"(index built in {r['search']['index_build_s']:.1f} s)",
        f"  second searcher anon RSS    {_mib(s2['anon_bytes'])}  {s2['anon_bytes'] / n:7,.0f}   "
        f"(answered by the first; holds an index: {r['searcher2']['holds_index']})",
        f"  system, one searcher        {_mib(one)}  {one / n:7,.0f}   (shm + writer + searcher)",
        f"  each further searcher       {_mib(s2['anon_bytes'])}",
        f"  LMDB file pages resident    {_mib(lmdb)}   (beside, not in the sums)",
        f"  peer: dict of dicts + ndarrays, one process {_mib(r['peer_dict_bytes'])}  {r['peer_dict_bytes'] / n:7,.0f}",
        f"  payload lower bound         {_mib(payload)}  {payload / n:7,.0f}",
    ]
    p = r["writer"]["put"]
    lines.append(
        f"put with embedding (writer = flusher): p50 {p['p50']:.1f} us, p99 {p['p99']:.1f} us; "
        f"{r['writer']['puts_per_s']:,.0f} puts/s"
    )
    b = r["bulk"]
    lines.append(
        f"put_many, {b['n']:,} observations in batches of {b['batch']:,} (loader = flusher): "
        f"{b['observations_per_s']:,.0f} observations/s"
    )
    s = r["search"]
    lines.append(
        f"search, top-{TOP_K}, M={s['M']} ef_construction={s['ef_construction']} ef={s['ef']}, one thread (us):"
    )
    for who in ("ours", "raw_hnswlib", "numpy_brute_force"):
        x = s[who]
        lines.append(f"  {who:18} p50 {x['p50']:8.1f}  p99 {x['p99']:8.1f}  recall@10 {x['recall_at_10']:.3f}")
    lines.append(
        f"  ours / raw hnswlib p50 {s['ours']['p50'] / s['raw_hnswlib']['p50']:.2f} (required <= 1.1); "
        f"raw build {s['raw_build_s']:.1f} s"
    )
    x = r["searcher2"]["served"]
    over = r["searcher2"]["remote_overhead_p50_us"]
    lines += [
        f"  {'ours, served':18} p50 {x['p50']:8.1f}  p99 {x['p99']:8.1f}  recall@10 {x['recall_at_10']:.3f}"
        "   (a second process, answered by the holder)",
        f"  served - in the holder p50 {x['p50'] - s['ours_right_after_served']['p50']:+.1f} us "
        f"(the holder's p50 {s['ours_right_after_served']['p50']:.1f} us, timed right after; required <= 50); "
        f"stats() says {over:.1f} us beyond the holder's own search time",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = suite_parser("vectors", __doc__, "20,000 observations")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--full", action="store_true", help="1,000,000 observations")
    args = ap.parse_args(argv)
    r = run(1_000_000 if args.full else 20_000 if args.quick else args.n)
    return finish(r, report(r), args.json)


if __name__ == "__main__":
    raise SystemExit(main())
