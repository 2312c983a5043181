"""``nt-memory demo``: a few agent processes share one system by name and report latencies.

Each agent attaches to the system, publishes its position (a float64 array) under its own namespace,
reads every other agent's position from Python and from an ``@njit`` tick handler, and records
per-call latencies. The parent aggregates and prints stable ``key: value`` lines.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import secrets
import signal
import time

import numpy as np

SAMPLE = 200_000


def _agent(name: str, agent: int, agents: int, seconds: float, out) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    from nt_memory.kernels._jit import jit
    from nt_memory.tiers.codec import array_data_offset
    from nt_memory.tiers.l1 import HotCache, l1_lookup

    @jit
    def tick_handler(handle, hashes, keys, key_lens, out_buf, prices, rounds):
        exposure = 0.0
        for _ in range(rounds):
            for j in range(len(hashes)):
                n = l1_lookup(handle, hashes[j], keys[j, : key_lens[j]], out_buf)
                if n >= 0:
                    off = array_data_offset(out_buf)
                    exposure += out_buf[off : n >> 8].view(np.float64)[0] * prices[j]
        return exposure

    cache = HotCache.attach(name, label=f"agent-{agent}")
    try:
        rnd = np.random.default_rng(agent)
        me = f"agent_{agent}"
        others = [f"agent_{a}" for a in range(agents)]
        get_lat = np.zeros(SAMPLE, np.int64)
        put_lat = np.zeros(SAMPLE, np.int64)
        gets = puts = hits = 0
        qty = 0.0
        keys = [cache.key_array(o, "position") for o in others]
        kmax = max(len(k) for k in keys)
        karr = np.zeros((len(keys), kmax), np.uint8)
        klen = np.array([len(k) for k in keys], np.int64)
        for i, k in enumerate(keys):
            karr[i, : len(k)] = k
        hashes = np.array([cache.key_hash(o, "position") for o in others], np.int64)
        out_buf = np.zeros(cache.max_value_bytes + 8, np.uint8)
        prices = np.full(len(others), 100.0)
        handle = cache.njit_handle()
        tick_handler(handle, hashes, karr, klen, out_buf, prices, 1)
        clock = time.perf_counter_ns
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            qty += float(rnd.normal())
            t0 = clock()
            cache.put(me, "position", np.array([qty, 100.0 + rnd.normal()]))
            put_lat[puts % SAMPLE] = clock() - t0
            puts += 1
            for other in others:
                t0 = clock()
                v = cache.get(other, "position")
                get_lat[gets % SAMPLE] = clock() - t0
                gets += 1
                hits += v is not None
        rounds = 20_000
        t0 = clock()
        tick_handler(handle, hashes, karr, klen, out_buf, prices, rounds)
        njit_ns = (clock() - t0) / (rounds * len(hashes))
        out.put(
            {
                "agent": agent,
                "pid": os.getpid(),
                "puts": puts,
                "gets": gets,
                "hits": hits,
                "get_ns": get_lat[: min(gets, SAMPLE)],
                "put_ns": put_lat[: min(puts, SAMPLE)],
                "njit_ns": njit_ns,
            }
        )
    finally:
        cache.close()


def run(agents: int = 4, seconds: float = 5.0, name: str | None = None, keep: bool = False) -> int:
    from nt_memory.tiers.l1 import HotCache

    name = name or f"demo{secrets.token_hex(3)}"
    t0 = time.perf_counter()
    cache = HotCache.create(name, max_entries=100_000, label="demo")
    cache.put("demo", "warmup", b"x")
    cache.get("demo", "warmup")
    print(f"system: {name}")
    print(f"cold_start_s: {time.perf_counter() - t0:.2f}")
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_agent, args=(name, a, agents, seconds, results)) for a in range(agents)]
    rows = []
    try:
        for p in procs:
            p.start()
        print(f"agents: {agents} processes attached by name, running {seconds:g}s")
        deadline = time.monotonic() + seconds + 120
        while len(rows) < agents and time.monotonic() < deadline:
            try:
                rows.append(results.get(timeout=0.5))
            except queue.Empty:
                if not any(p.is_alive() for p in procs) and results.empty():
                    break
        for p in procs:
            p.join(10)
    except KeyboardInterrupt:
        print("interrupted: cleaning up")
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        stats = cache.stats()
        cache.close()
        if not keep:
            cache.unlink()
    if not rows:
        print("error: no agent reported")
        return 1
    gets = np.concatenate([r["get_ns"] for r in rows])
    puts = np.concatenate([r["put_ns"] for r in rows])
    for r in sorted(rows, key=lambda r: r["agent"]):
        print(f"agent_{r['agent']}: pid={r['pid']} puts={r['puts']} gets={r['gets']} hits={r['hits']}")
    g50, g99, g999 = np.percentile(gets, [50, 99, 99.9])
    p50, p99 = np.percentile(puts, [50, 99])
    njit = float(np.median([r["njit_ns"] for r in rows]))
    print(f"l1_get_p50_ns: {g50:.0f}")
    print(f"l1_get_p99_ns: {g99:.0f}  (seed target < 1000)")
    print(f"l1_get_p999_ns: {g999:.0f}")
    print(f"l1_put_p50_ns: {p50:.0f}")
    print(f"l1_put_p99_ns: {p99:.0f}")
    print(f"njit_lookup_mean_ns: {njit:.0f}  (seed target < 100)")
    print(f"entries: {stats['entries']}  hit_ratio: {stats['hit_ratio']:.3f}  repairs: {stats['repairs']}")
    print(f"kept: {name}" if keep else "cleaned: yes")
    return 0 if len(rows) == agents else 1
