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
from nt_memory.servers import redis_missing, redis_server
from nt_memory.tiers.l1 import l1_lookup
from nt_memory.timing import SEED_TARGETS, human, meets, percentiles, time_calls


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
def row_l1(n_keys: int, calls: int, mgr_calls: int, progress: Progress) -> dict:
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
        row |= _redis_and_ultradict_gets(keys, value, args, calls)
        put_args = [("agent", keys[i], value) for i in order[: calls // 2]]
        put: dict = {
            "ours": percentiles(time_calls(cache.put, put_args)),
            "dict_setitem": percentiles(time_calls(lambda ns, k, v: d.__setitem__((ns, k), v), put_args)),
        }
        row["put"] = put | _redis_sets(put_args)
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
        njit_row = {"ours": percentiles(lat), "unit": "ns", "keys": "16 hot keys (a handler's own positions)"}
        njit_lookup_timed(handle, hashes, karr, klen, order.astype(np.int64), out, lat)
        njit_row["uniform_over_table"] = percentiles(lat)
        clock_pair_timed(calls, lat)
        njit_row["clock_pair_alone"] = percentiles(lat)
        return {"l1_get": row | {"keys": n_keys}, "position_lookup_njit": njit_row | {"table_keys": n_keys}}
    finally:
        cache.close()
        cache.unlink()


REDIS_CALLS = 20_000  # a Redis round trip is tens of microseconds: this many calls per row


def _redis_and_ultradict_gets(keys: list[str], value: bytes, args: list[tuple], calls: int) -> dict:
    """GET through redis-py from a private redis-server (same keys and order), and UltraDict's
    get, beside the L1 row; a row the host cannot measure says why."""
    out: dict = {}
    with redis_server() as port:
        if port is None:
            out["redis_get"] = redis_missing()
        else:
            import redis

            r = redis.Redis(port=port)
            for i in range(0, len(keys), 10_000):
                r.mset({f"agent/{k}": value for k in keys[i : i + 10_000]})
            rargs = [(f"{ns}/{k}",) for ns, k in args[:REDIS_CALLS]]
            time_calls(r.get, rargs[:1000])
            out["redis_get"] = percentiles(time_calls(r.get, rargs))
            r.close()
    try:
        from UltraDict import UltraDict
    except ImportError:
        out["ultradict_get"] = "not measured: UltraDict is missing (pip install 'nt-memory[bench]')"
        return out
    ultra = UltraDict(
        name=f"ud{secrets.token_hex(3)}", create=True, buffer_size=64 * len(keys) * 4, full_dump_size=None
    )
    try:
        ultra.update({f"agent/{k}": value for k in keys})
        uargs = [(f"{ns}/{k}",) for ns, k in args[: min(calls, 100_000)]]
        out["ultradict_get"] = percentiles(time_calls(ultra.get, uargs))
    finally:
        ultra.unlink()
    return out


def _redis_sets(put_args: list[tuple]) -> dict:
    with redis_server() as port:
        if port is None:
            return {"redis_set": redis_missing()}
        import redis

        r = redis.Redis(port=port)
        sargs = [(f"{ns}/{k}", v) for ns, k, v in put_args[:REDIS_CALLS]]
        time_calls(r.set, sargs[:1000])
        row = {"redis_set": percentiles(time_calls(r.set, sargs))}
        r.close()
        return row


def row_vectors(n: int, queries: int, progress: Progress) -> dict:
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
        build = 0.0
        points = []  # (observations, allocated /dev/shm, anonymous RSS) after each half, index built
        for lo, hi in ((0, n // 2), (n // 2, n)):
            for i in range(lo, hi):
                mem.put("obs", f"o{i}", {"i": i}, embedding=data[i])
                if i % 5000 == 0:
                    progress.update(task, completed=i)
            started = time.perf_counter()
            mem.l2.sync()
            build += time.perf_counter() - started
            shm = shm_bytes(mem.system.name)
            points.append((hi, sum(shm.values()), process_memory(os.getpid())["anon_bytes"]))
        progress.update(task, completed=n)
        lat, hits = [], 0
        for q, t in zip(qs, truth, strict=True):
            t0 = time.perf_counter_ns()
            res = mem.search_similar("obs", q, top_k=10)
            lat.append(time.perf_counter_ns() - t0)
            hits += len({int(h.key[1:]) for h in res} & t)
        # Footprint, measured here: the system's allocated /dev/shm and this process's anonymous
        # RSS, after half the observations and after all of them (each time with the index
        # built). What the second half added, per observation, is the cost of one more; what the
        # first half cost beyond that is fixed (segments that do not grow, first allocations).
        anon_growth = points[1][2] - anon_before
        per_obs = (points[1][1] - points[0][1] + points[1][2] - points[0][2]) / (points[1][0] - points[0][0])
        fixed = points[1][1] + anon_growth - per_obs * n
    finally:
        mem.close()
        mem.unlink()
        shutil.rmtree(root, ignore_errors=True)
    footprint_parts = {k: v for k, v in shm.items()} | {"anon_growth": anon_growth, "fixed": fixed}
    raw = hnswlib.Index(space="cosine", dim=dim)
    raw.init_index(n, M=DEFAULT_M, ef_construction=EF_CONSTRUCTION)
    raw.add_items(data, np.arange(n))
    # The raw index's bytes as hnswlib counts them (its saved size: vectors, links, labels). RSS
    # would not do here: it reuses the heap the system above just freed.
    raw_bytes = raw.index_file_size()
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
        "raw_hnswlib": {"per_1m": raw_bytes / n * 1_000_000 / (1 << 20), "bytes_per_obs": raw_bytes / n},
        "note": "allocated /dev/shm + this process's anonymous RSS, measured at n/2 and n: the second half's "
        "cost per observation times 1M, plus what the first half cost beyond it; "
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


def _mq_receiver(qname, n, ready, out):
    import posix_ipc

    mq = posix_ipc.MessageQueue(qname)
    ready.set()
    lat = []
    for _ in range(n):
        m, _prio = mq.receive()
        lat.append(time.perf_counter_ns() - int.from_bytes(m[:8], "little"))
    mq.close()
    out.put(lat)


def _redis_receiver(port, n, ready, out):
    import redis

    sub = redis.Redis(port=port).pubsub(ignore_subscribe_messages=True)
    sub.subscribe("bench")
    ready.set()
    lat: list[int] = []
    deadline = time.monotonic() + 120
    while len(lat) < n and time.monotonic() < deadline:
        m = sub.get_message(timeout=1.0)
        if m is not None and m["type"] == "message":
            lat.append(time.perf_counter_ns() - int.from_bytes(m["data"][:8], "little"))
    sub.close()
    out.put(lat)


def _peer_pubsub(ctx, target, args, send, n: int) -> list[int]:
    """Start a receiver process ``target(*args, n, ready, out)``, send ``n`` paced messages through
    ``send``, and return the receiver's one-way latencies."""
    ready, out = ctx.Event(), ctx.Queue()
    p = ctx.Process(target=target, args=(*args, n, ready, out))
    p.start()
    try:
        ready.wait(120)
        time.sleep(0.3)
        _paced(send, n)
        return out.get(timeout=120)
    finally:
        p.join(30)
        if p.is_alive():
            p.kill()


def _peers_pubsub(ctx, n: int) -> dict:
    """posix_ipc.MessageQueue and Redis pub/sub, paced as ours; rows the host cannot measure say why."""
    import posix_ipc

    row: dict = {}
    qname = f"/ntmbench{secrets.token_hex(3)}"
    mq = posix_ipc.MessageQueue(qname, posix_ipc.O_CREX, max_messages=10, max_message_size=64)
    try:
        row["posix_mq"] = percentiles(_peer_pubsub(ctx, _mq_receiver, (qname,), mq.send, n), "us")
    finally:
        mq.close()
        mq.unlink()
    with redis_server() as port:
        if port is None:
            row["redis_pubsub"] = redis_missing()
        else:
            import redis

            r = redis.Redis(port=port)
            row["redis_pubsub"] = percentiles(
                _peer_pubsub(ctx, _redis_receiver, (port,), lambda b: r.publish("bench", b), n), "us"
            )
            r.close()
    return row


def row_pubsub(n: int) -> dict:
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
        | _peers_pubsub(ctx, n)
    }


def run(quick: bool) -> dict:
    results: dict = {
        "machine": f"{platform.machine()}, {mp.cpu_count()} cores, Python {platform.python_version()}",
        "quick": quick,
    }
    results["redis"] = redis_missing() or "measured: a private redis-server on a free loopback port"
    with Progress(transient=True) as progress:
        results |= row_l1(
            20_000 if quick else 100_000, 50_000 if quick else 200_000, 1000 if quick else 10_000, progress
        )
        results |= row_vectors(10_000 if quick else 100_000, 200 if quick else 500, progress)
        results |= row_pubsub(2000 if quick else 20_000)
    for row, (stat, target, unit) in SEED_TARGETS.items():
        value = results[row]["ours"][stat]
        results[row]["target"] = {"stat": stat, "value": target, "unit": unit}
        results[row]["verdict"] = "PASS" if meets(row, value) else "MISS"
    return results


# Each row's peers measured in the same run: (result key, label).
L1_PEERS = [
    ("dict_get", "dict.get"),
    ("lmdb_get", "LMDB get"),
    ("ultradict_get", "UltraDict get"),
    ("redis_get", "Redis GET"),
    ("manager_dict_get", "Manager().dict() get"),
]
PUT_PEERS = [("dict_setitem", "dict set"), ("redis_set", "Redis SET")]
PUBSUB_PEERS = [
    ("posix_mq", "MessageQueue"),
    ("multiprocessing_queue", "mp.Queue"),
    ("redis_pubsub", "Redis pub/sub"),
]


def _beside(row: dict, peers: list[tuple[str, str]], unit: str) -> str:
    """``label p50 / p99`` for each peer of ``row`` that was measured, and why for one that was not."""
    out = []
    for key, label in peers:
        v = row.get(key)
        if isinstance(v, dict):
            out.append(f"{label} {human(v['p50'], unit)} / {human(v['p99'], unit)}")
        elif isinstance(v, str):
            out.append(f"{label}: {v}")
    return "p50 / p99: " + "; ".join(out)


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
        _beside(r["l1_get"], L1_PEERS, "ns"),
    )
    put = r["l1_get"]["put"]
    t.add_row(
        "L1 put (Python, 32 B bytes)",
        "(none)",
        f"p50 {f(put['ours']['p50'], 'ns')}, p99 {f(put['ours']['p99'], 'ns')}",
        "",
        _beside(put, PUT_PEERS, "ns"),
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
        f"{f(m['ours']['per_1m'], 'MiB')} per 1M ({m['ours']['bytes_per_obs']:,.0f} B per observation from n/2 to "
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
        _beside(p, PUBSUB_PEERS, "us"),
    )
    return t


# (result row, panel title, peers): what each panel of --plot draws.
PLOT_ROWS = [
    ("l1_get", "L1 lookup, Python get", L1_PEERS),
    ("position_lookup_njit", "Position lookup in @njit", [("uniform_over_table", "ours, keys uniform over the table")]),
    (
        "vector_search",
        "Vector search, top 10",
        [("raw_hnswlib", "raw hnswlib"), ("numpy_brute_force", "numpy brute force")],
    ),
    ("memory_footprint", "Memory footprint per 1M observations", [("raw_hnswlib", "raw hnswlib index (its size)")]),
    ("cross_agent_pubsub", "Cross-agent pub/sub, one way", PUBSUB_PEERS),
]


def plot(results: dict, path: str) -> None:
    """One panel per seed target: nt-memory and each peer measured in the same run, on a log axis
    (the target's statistic as a bar, p50 as a dot where it applies), the target as a line, and
    the verdict in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(PLOT_ROWS), 1, figsize=(11, 2.6 * len(PLOT_ROWS)))
    for ax, (key, title, peers) in zip(axes, PLOT_ROWS, strict=True):
        row = results[key]
        stat, bound, unit = SEED_TARGETS[key]
        bars = [("nt-memory", row["ours"])] + [(label, row[k]) for k, label in peers if isinstance(row.get(k), dict)]
        missing = [f"{label}: {row[k]}" for k, label in peers if isinstance(row.get(k), str)]
        names = [b[0] for b in bars][::-1]
        values = [b[1][stat] for b in bars][::-1]
        p50 = [b[1].get("p50") for b in bars][::-1]
        shown = values + [bound] + [v for v in p50 if v is not None]
        left, right = min(shown) / 3, max(shown) * 4
        colors = ["#1f77b4" if n == "nt-memory" else "#9e9e9e" for n in names]
        # Bars from the left edge (a log axis has no zero), each labelled with its figure.
        ax.barh(names, [v - left for v in values], left=left, color=colors, label=stat)
        for y, v in enumerate(values):
            ax.text(v * 1.08, y, human(v, unit), va="center", fontsize=7)
        if all(v is not None for v in p50):
            ax.plot(p50, names, "o", color="black", markersize=4, label="p50")
        ax.axvline(bound, color="#d62728", linestyle="--", label=f"target: {stat} < {human(bound, unit)}")
        ax.set_xscale("log")
        ax.set_xlim(left, right)
        ax.set_xlabel(unit if unit != "us" else "µs")
        ours = human(row["ours"][stat], unit)
        ax.set_title(f"{title}: {row['verdict']} (ours {stat} {ours}, target < {human(bound, unit)})", fontsize=10)
        ax.tick_params(axis="y", labelsize=8)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        if missing:
            ax.text(0.0, -0.42, "; ".join(missing), transform=ax.transAxes, fontsize=7, color="#555555")
    fig.suptitle(f"nt-memory bench: the seed's targets ({results['machine']}), peers measured in the same run")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = suite_parser("seed", __doc__, "smaller sizes: about half a minute")
    ap.add_argument(
        "--plot", default=None, metavar="PATH", help="save a PNG: each target beside its peers (needs matplotlib)"
    )
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
    results = run(args.quick)
    console.print(render(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
