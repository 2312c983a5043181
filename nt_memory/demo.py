"""``nt-memory demo``: agent processes share one memory system by name and report latencies.

Phase 1: each agent opens the system, publishes its position (a float64 array) under its own
namespace, reads every other agent's position from Python and from an ``@njit`` tick handler, and
records per-call latencies. Phase 2: every agent process is restarted and checks what its
predecessor wrote. Phase 3: the segments are removed (what a reboot does) and the data is read back
from LMDB under ``storage_path``. The parent prints stable ``key: value`` lines.
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


def _config(name: str, path: str):
    from nt_memory import CacheConfig, MemoryConfig

    return MemoryConfig(name=name, storage_path=path, cache_config=CacheConfig(max_entries=100_000))


def _verify_agent(name: str, path: str, agent: int, out) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from nt_memory import MemorySystem

    mem = MemorySystem.open(_config(name, path), label=f"agent-{agent}-restarted")
    try:
        final = mem.get(f"agent_{agent}", "final")
        pos = mem.get(f"agent_{agent}", "position")
        ok = final is not None and pos is not None and float(pos[0]) == final["qty"]
        out.put({"agent": agent, "ok": bool(ok), "puts": final["puts"] if final else 0})
    finally:
        mem.close()


def _agent(name: str, path: str, agent: int, agents: int, seconds: float, out) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    from nt_memory import MemorySystem
    from nt_memory.kernels._jit import jit
    from nt_memory.tiers.codec import array_data_offset
    from nt_memory.tiers.l1 import l1_lookup

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

    mem = MemorySystem.open(_config(name, path), label=f"agent-{agent}")
    cache = mem.l1
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
            mem.put(me, "position", np.array([qty, 100.0 + rnd.normal()]))
            put_lat[puts % SAMPLE] = clock() - t0
            puts += 1
            for other in others:
                t0 = clock()
                v = mem.get(other, "position")
                get_lat[gets % SAMPLE] = clock() - t0
                gets += 1
                hits += v is not None
        mem.put(me, "final", {"qty": qty, "puts": puts})
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
        mem.close()


def _spawn_and_collect(ctx, target, args_for, agents, timeout):
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args_for(a), results)) for a in range(agents)]
    rows = []
    try:
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout
        while len(rows) < agents and time.monotonic() < deadline:
            try:
                rows.append(results.get(timeout=0.5))
            except queue.Empty:
                if not any(p.is_alive() for p in procs) and results.empty():
                    break
        for p in procs:
            p.join(10)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
    return rows


def run(agents: int = 4, seconds: float = 5.0, name: str | None = None, keep: bool = False, path=None) -> int:
    import shutil
    import tempfile

    from nt_memory import MemorySystem

    name = name or f"demo{secrets.token_hex(3)}"
    tmp = None
    if path is None:
        tmp = path = tempfile.mkdtemp(prefix="nt-memory-demo-")
    t0 = time.perf_counter()
    mem = MemorySystem.open(_config(name, path), label="demo")
    mem.put("demo", "warmup", b"x")
    mem.get("demo", "warmup")
    print(f"system: {name}")
    print(f"storage_path: {path}")
    print(f"cold_start_s: {time.perf_counter() - t0:.2f}")
    ctx = mp.get_context("spawn")
    rows, restarted, rebooted = [], [], 0
    try:
        print(f"agents: {agents} processes attached by name, running {seconds:g}s")
        rows = _spawn_and_collect(ctx, _agent, lambda a: (name, path, a, agents, seconds), agents, seconds + 120)
        print(f"restart: all {agents} agent processes exited; starting fresh ones")
        restarted = _spawn_and_collect(ctx, _verify_agent, lambda a: (name, path, a), agents, 120)
        stats = mem.stats()
        mem.flush()
        mem.close()
        mem.unlink()
        print("reboot: segments removed; reopening from storage_path")
        mem = MemorySystem.open(_config(name, path), label="demo")
        rebooted = sum(mem.get(f"agent_{r['agent']}", "final") is not None for r in rows)
    except KeyboardInterrupt:
        print("interrupted: cleaning up")
        stats = None
    finally:
        mem.close()
        if not keep:
            mem.unlink()
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
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
    print(f"put_p50_ns: {p50:.0f}")
    print(f"put_p99_ns: {p99:.0f}")
    print(f"njit_lookup_mean_ns: {njit:.0f}  (seed target < 100)")
    if stats:
        l1 = stats["l1"]
        print(f"entries: {l1['entries']}  hit_ratio: {l1['hit_ratio']:.3f}  repairs: {l1['repairs']}")
        print(f"journal_appends: {stats['journal']['appends']}  l3_entries: {stats['l3']['kv_entries']}")
    ok_restart = sum(r["ok"] for r in restarted)
    print(f"restart_recovered: {ok_restart}/{agents}")
    print(f"reboot_recovered: {rebooted}/{agents}")
    print(f"kept: {name}" if keep else "cleaned: yes")
    return 0 if len(rows) == agents and ok_restart == agents and rebooted == agents else 1
