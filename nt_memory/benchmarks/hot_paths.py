"""The hot paths beside the stores they replace, measured in one run (issue 11's table).

    nt-memory bench hot [--keys 100000] [--calls 200000] [--json PATH] [--quick]
    python -m bench.hot_paths ...            # the same, from a checkout

A parent process creates a memory system and fills it (and LMDB, UltraDict) with the same keys;
a second process attaches **by name** and times every call one by one with a
``time.perf_counter_ns`` pair, keys in random order, peers in the same loop in the same process:

- get of a 64-byte ``bytes`` value: ``HotCache.get``, ``MemorySystem.get``; LMDB with a reused read
  transaction; UltraDict (another process's shared dict); ``dict.get``;
- get of a float64[8] array (LMDB + ``np.frombuffer`` beside it) and of a small JSON object
  (``json.loads`` of the same bytes beside it);
- put of 64 bytes: ``HotCache.put``, ``MemorySystem.put`` (write-behind), ``dict.__setitem__``;
- ``get_many`` / ``put_many`` of 100 keys (one compiled call per batch) beside a Python loop of
  single calls over the same keys;
- a lock's acquire + release, uncontended, beside ``multiprocessing.Lock``; and two processes
  contending for it, acquisitions per second with exclusion checked, beside the same for
  ``multiprocessing.Lock``;
- pub/sub: a sleeping subscriber's one-way latency with a message every 200 us, beside
  ``posix_ipc.MessageQueue`` with the same pacing, and a ``try_recv`` spinner.

The machine is shared and its speed swings: the ratios (same run) are the figures to trust.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import secrets
import shutil
import tempfile
import time

import lmdb
import numpy as np

from nt_memory import CacheConfig, MemoryConfig, MemorySystem
from nt_memory.benchmarks import BATCH, batch_calls, finish, suite_parser
from nt_memory.timing import percentiles, time_calls

CTX = mp.get_context("spawn")
VALUE = bytes(range(64))
ARRAY = np.arange(8, dtype=np.float64)
JSON_VALUE = {"qty": 10, "px": 101.25, "side": "buy"}
PUBSUB_ROUNDS = 5  # paced pub/sub runs of each kind, interleaved
WARMUP_S = 0.2  # paced messages not measured at the start of each pub/sub run
WARMUP_MESSAGES = 2000  # and unpaced ones


def _config(name: str, path: str, nkeys: int) -> MemoryConfig:
    return MemoryConfig(name=name, storage_path=path, cache_config=CacheConfig(max_entries=3 * nkeys + 1024, ttl=None))


def _fill(name: str, path: str, nkeys: int):
    mem = MemorySystem.open(_config(name, path, nkeys), label="bench-parent")
    for i in range(nkeys):
        mem.put("b", f"key{i}", VALUE)
        mem.put("a", f"key{i}", ARRAY)
        mem.put("j", f"key{i}", JSON_VALUE)
    mem.flush()
    env = lmdb.open(os.path.join(path, "peer-lmdb"), map_size=1 << 31, sync=False, metasync=False)
    with env.begin(write=True) as txn:
        for i in range(nkeys):
            txn.put(f"b\0key{i}".encode(), VALUE)
            txn.put(f"a\0key{i}".encode(), ARRAY.tobytes())
            txn.put(f"j\0key{i}".encode(), json.dumps(JSON_VALUE).encode())
    env.close()
    ultra = None
    try:
        from UltraDict import UltraDict

        ultra = UltraDict(name=f"ud{name}", create=True, buffer_size=64 * nkeys * 4, full_dump_size=None)
        ultra.update({f"key{i}": VALUE for i in range(nkeys)})
    except ImportError:
        pass
    return mem, ultra


def _reads(name: str, path: str, nkeys: int, calls: int, out) -> None:
    """Second process: every read and write row, peers in the same loop."""
    rng = np.random.default_rng(11)
    mem = MemorySystem.open(_config(name, path, nkeys), label="bench-reader")
    r: dict = {}
    try:
        order = rng.integers(0, nkeys, calls)
        bkeys = [("b", f"key{i}") for i in order]
        akeys = [("a", f"key{i}") for i in order]
        jkeys = [("j", f"key{i}") for i in order]
        cache = mem.l1
        r["timer_pair"] = percentiles(time_calls(lambda: None, [()] * calls))
        time_calls(cache.get, bkeys[:20_000])
        r["hotcache_get_bytes"] = percentiles(time_calls(cache.get, bkeys))
        r["memory_get_bytes"] = percentiles(time_calls(mem.get, bkeys))
        d = {f"key{i}": VALUE for i in range(nkeys)}
        dkeys = [(f"key{i}",) for i in order]
        r["dict_get"] = percentiles(time_calls(d.get, dkeys))
        env = lmdb.open(os.path.join(path, "peer-lmdb"), readonly=True, lock=False)
        with env.begin() as txn:
            lk = [(f"b\0key{i}".encode(),) for i in order]
            r["lmdb_get_reused_txn"] = percentiles(time_calls(txn.get, lk))
            ak = [(f"a\0key{i}".encode(),) for i in order]
            frombuffer = lambda k: np.frombuffer(txn.get(k), np.float64)  # type: ignore[arg-type]  # noqa: E731
            r["lmdb_get_frombuffer_f64x8"] = percentiles(time_calls(frombuffer, ak))
            raw = json.dumps(JSON_VALUE).encode()
            r["json_loads_same_bytes"] = percentiles(time_calls(json.loads, [(raw,)] * calls))
        env.close()
        r["hotcache_get_f64x8"] = percentiles(time_calls(cache.get, akeys))
        r["hotcache_get_json"] = percentiles(time_calls(cache.get, jkeys))
        try:
            from UltraDict import UltraDict

            ultra = UltraDict(name=f"ud{name}", create=False)
            r["ultradict_get"] = percentiles(time_calls(ultra.get, dkeys))
            ultra.close()
        except ImportError:
            r["ultradict_get"] = None
        puts = [("b", f"key{i}", VALUE) for i in order[: calls // 2]]
        r["hotcache_put_bytes"] = percentiles(time_calls(cache.put, puts))
        r["memory_put_bytes"] = percentiles(time_calls(mem.put, puts))
        r["dict_setitem"] = percentiles(time_calls(d.__setitem__, [(p[1], p[2]) for p in puts]))
        r.update(_batches(mem, order, calls))
        lock = mp.Lock()
        n = calls // 4

        def ours():
            mem.release_lock(mem.acquire_lock("bench"))

        def theirs():
            lock.acquire()
            lock.release()

        time_calls(ours, [()] * 10_000)
        r["lock_uncontended"] = percentiles(time_calls(ours, [()] * n))
        r["mp_lock_uncontended"] = percentiles(time_calls(theirs, [()] * n))
    finally:
        mem.close()
    out.put(r)


def _batches(mem: MemorySystem, order: np.ndarray, calls: int) -> dict:
    """``get_many`` / ``put_many`` of BATCH keys beside a Python loop of single calls over the
    same keys, each batch timed whole (per key: the batch's time / BATCH)."""
    gets, puts, get_loop, put_loop = batch_calls(mem, "b", [f"key{i}" for i in order], VALUE)
    pairs = puts[: max(1, len(puts) // 2)]
    r: dict = {"batch": BATCH}
    for label, fn, args in (
        ("get_many", mem.get_many, gets),
        ("get_loop", get_loop, gets),
        ("put_many", mem.put_many, pairs),
        ("put_loop", put_loop, pairs),
    ):
        fn(*args[0])  # warm
        r[f"{label}_per_key"] = percentiles(time_calls(fn, args) / BATCH)
    return r


# ------------------------------------------------------------------------------ contention


def _contender(name, path, nkeys, which, lock, counter, seconds, start, out) -> None:
    mem = MemorySystem.open(_config(name, path, nkeys), label="bench-contender") if which == "ours" else None
    n = 0
    try:
        if mem is not None:
            mem.release_lock(mem.acquire_lock("contended"))
        start.wait(60)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            for _ in range(100):
                if mem is not None:
                    token = mem.acquire_lock("contended")
                    counter.value += 1  # a plain read-modify-write: exact only under exclusion
                    mem.release_lock(token)
                else:
                    lock.acquire()
                    counter.value += 1
                    lock.release()
                n += 1
        out.put(n)
    finally:
        if mem is not None:
            mem.close()


def _contend(name: str, path: str, nkeys: int, which: str, seconds: float, procs: int = 2) -> dict:
    """``procs`` processes taking one lock (ours, or ``multiprocessing.Lock``) in a loop for
    ``seconds``: acquisitions per second, and whether a counter guarded only by it came out exact."""
    counter = CTX.RawValue("q", 0)  # no lock of its own: the lock under test guards it
    lock = CTX.Lock()
    start = CTX.Barrier(procs)
    out = CTX.Queue()
    workers = [
        CTX.Process(target=_contender, args=(name, path, nkeys, which, lock, counter, seconds, start, out))
        for _ in range(procs)
    ]
    for p in workers:
        p.start()
    counts = [out.get(timeout=300) for _ in workers]
    for p in workers:
        p.join(30)
    return {
        "procs": procs,
        "acquisitions_per_s": sum(counts) / seconds,
        "exclusion_held": counter.value == sum(counts),
    }


# ----------------------------------------------------------------------------------- pub/sub


def _subscriber(name, path, nkeys, kind, n, warm, idx, ready, out, timeout) -> None:
    """Receive ``warm`` unmeasured messages, then ``n`` measured ones (see :func:`_pubsub_once`);
    a sleeping receiver waits ``timeout`` seconds at most for each (None: no limit, as a
    MessageQueue receiver here waits)."""
    lat = np.zeros(n, np.int64)
    cpu0 = 0.0
    if kind == "mq":
        import posix_ipc

        mq = posix_ipc.MessageQueue(f"/{name}mq{idx}", posix_ipc.O_CREAT, max_messages=10, max_message_size=64)
        ready.put(idx)
        for i in range(warm + n):
            msg, _ = mq.receive()
            if i >= warm:
                lat[i - warm] = time.perf_counter_ns() - int.from_bytes(msg[:8], "little")
            elif i == warm - 1:
                cpu0 = time.process_time()
        mq.close()
        dropped = 0
    else:
        mem = MemorySystem.open(_config(name, path, nkeys), label="bench-subscriber")
        sub = mem.subscribe("bench/latency")
        ready.put(idx)
        got = 0
        while got < n:
            if kind == "spin":
                msg = None
                while msg is None:
                    msg = sub.try_recv()
            else:
                msg = sub.recv(timeout)  # paced: None, as MessageQueue.receive() above
                if msg is None:
                    break  # the publisher is done and what was dropped will not come
            if msg[8:9] == b"W":
                cpu0 = time.process_time()
                continue
            lat[got] = time.perf_counter_ns() - int.from_bytes(msg[:8], "little")
            got += 1
            if msg[8:9] == b"E":
                break  # the last message: some before it were dropped
        lat = lat[:got]
        dropped = sub.dropped
        mem.close()
    out.put((idx, {"cpu_s": time.process_time() - cpu0, "lat": lat, "dropped": dropped}))


def _pubsub_once(name: str, path: str, nkeys: int, kind: str, n: int, pace_us: float, subscribers: int) -> dict:
    """One publisher, ``subscribers`` receivers of every message (``kind`` "sleep": ``recv()``,
    "spin": ``try_recv()`` in a loop, "mq": one ``posix_ipc.MessageQueue`` per receiver, the
    publisher sending to each in turn). ``pace_us`` > 0: a message every ``pace_us`` and the one-way
    latency of each; 0: as fast as the publisher can. The first WARMUP_S of messages are not
    measured: a just-started process stalls for milliseconds now and then in its first ~50 ms,
    whatever it waits on. Returns the raw figures of the run."""
    warm = int(WARMUP_S * 1e6 / pace_us) if pace_us else WARMUP_MESSAGES
    ready, out = CTX.Queue(), CTX.Queue()
    # Paced, every message comes and receivers wait as long as it takes; unpaced, lapping may drop
    # the last one, and a receive that times out ends the run.
    wait = None if pace_us else 10.0
    procs = [
        CTX.Process(target=_subscriber, args=(name, path, nkeys, kind, n, warm, i, ready, out, wait))
        for i in range(subscribers)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=300)
    time.sleep(0.2)
    if kind == "mq":
        import posix_ipc

        queues = [posix_ipc.MessageQueue(f"/{name}mq{i}") for i in range(subscribers)]

        def send(b):
            for q in queues:
                q.send(b)
    else:
        pub = MemorySystem.open(_config(name, path, nkeys), label="bench-publisher")

        def send(b):
            pub.publish("bench/latency", b)

    pad = b"x" * 56
    t_next = time.perf_counter_ns()
    for _ in range(warm):
        if pace_us:
            t_next += int(pace_us * 1000)
            while time.perf_counter_ns() < t_next:
                pass
        send(time.perf_counter_ns().to_bytes(8, "little") + b"W" + pad[1:])
    t0 = t_next = time.perf_counter_ns()
    for i in range(n):
        if pace_us:
            t_next += int(pace_us * 1000)
            while time.perf_counter_ns() < t_next:
                pass
        send(time.perf_counter_ns().to_bytes(8, "little") + (b"E" if i == n - 1 else b"x") + pad[1:])
    publish_s = (time.perf_counter_ns() - t0) / 1e9
    try:
        res = dict(out.get(timeout=300) for _ in procs)
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():  # a receiver still waiting (its messages never came): end it
                p.kill()
                p.join(5)
    if kind == "mq":
        for q in queues:
            q.close()
            q.unlink()
    else:
        pub.close()
    return {"subs": [res[i] for i in range(subscribers)], "publish_s": publish_s, "n": n, "pace_us": pace_us}


def _pubsub_summary(runs: list[dict]) -> dict:
    """The figures of one or more runs of one kind, their latencies pooled."""
    subscribers = len(runs[0]["subs"])
    lats = [np.concatenate([r["subs"][i]["lat"] for r in runs]) / 1000.0 for i in range(subscribers)]
    p99s = [float(np.percentile(x, 99)) for x in lats if len(x)]
    every = np.concatenate(lats)
    n = sum(r["n"] for r in runs)
    publish_s = sum(r["publish_s"] for r in runs)
    pace_us = runs[0]["pace_us"]
    return {
        "subscribers": subscribers,
        "rounds": len(runs),
        "p50_us": float(np.percentile(every, 50)),
        "p99_us": float(np.percentile(every, 99)),
        "worst_subscriber_p99_us": max(p99s),
        "n": n,
        "received": [len(x) for x in lats],
        "dropped": sum(s["dropped"] for r in runs for s in r["subs"]),
        # a sleeping receiver uses a fraction of the run's time
        "subscriber_cpu_s": sum(r["subs"][0]["cpu_s"] for r in runs),
        "seconds": n * pace_us / 1e6 if pace_us else publish_s,
        "publish_per_s": n / publish_s,
    }


def _pubsub(name: str, path: str, nkeys: int, kind: str, n: int, pace_us: float, subscribers: int = 1) -> dict:
    """One run of :func:`_pubsub_once`, summarised."""
    return _pubsub_summary([_pubsub_once(name, path, nkeys, kind, n, pace_us, subscribers)])


def _pubsub_interleaved(name: str, path: str, nkeys: int, kinds, n: int, pace_us: float, rounds: int) -> dict:
    """Each kind in turn, ``rounds`` times over, ``n // rounds`` messages a run: this host's wake-up
    latency drifts by 2-3x within a minute, and kinds measured minutes apart would compare the
    drift, not the mechanisms. Latencies of a kind are pooled over its rounds."""
    runs: dict = {k: [] for k in kinds}
    for _ in range(rounds):
        for k in kinds:
            runs[k].append(_pubsub_once(name, path, nkeys, k, max(1, n // rounds), pace_us, 1))
    return {k: _pubsub_summary(v) for k, v in runs.items()}


# ------------------------------------------------------------------------------------- report


def run(nkeys: int, calls: int, contend_s: float = 2.0, messages: int = 10_000) -> dict:
    name = f"bhp{secrets.token_hex(3)}"
    path = tempfile.mkdtemp(prefix="nt-memory-bench-")
    mem, ultra = _fill(name, path, nkeys)
    try:
        out = CTX.Queue()
        p = CTX.Process(target=_reads, args=(name, path, nkeys, calls, out))
        p.start()
        r = out.get(timeout=1800)
        p.join(60)
        r["keys"], r["calls"] = nkeys, calls
        r["lock_contended_ours"] = _contend(name, path, nkeys, "ours", contend_s)
        r["lock_contended_mp"] = _contend(name, path, nkeys, "mp", contend_s)
        paced = _pubsub_interleaved(name, path, nkeys, ("sleep", "mq", "spin"), messages, 200, PUBSUB_ROUNDS)
        r["pubsub_sleeping"], r["mq_sleeping"], r["pubsub_spinning"] = paced["sleep"], paced["mq"], paced["spin"]
    finally:
        if ultra is not None:
            ultra.unlink()
        mem.close()
        mem.unlink()
        shutil.rmtree(path, ignore_errors=True)
    return r


ROWS = [
    # (label, ours, peer, what the issue requires of the ratio ours / peer)
    ("get 64 B bytes, HotCache", "hotcache_get_bytes", "lmdb_get_reused_txn", "p50 <= 1.0"),
    ("get 64 B bytes, HotCache", "hotcache_get_bytes", "ultradict_get", "p50 < 1.0"),
    ("get 64 B bytes, HotCache", "hotcache_get_bytes", "dict_get", "p99 <= 1.5 (aim p50/p99 1.2)"),
    ("get 64 B bytes, MemorySystem", "memory_get_bytes", "lmdb_get_reused_txn", "p50 <= 1.0"),
    ("get 64 B bytes, MemorySystem", "memory_get_bytes", "dict_get", "p99 <= 1.5"),
    ("get float64[8]", "hotcache_get_f64x8", "lmdb_get_frombuffer_f64x8", "p50 <= 1.0"),
    ("get float64[8]", "hotcache_get_f64x8", "dict_get", "p50 <= 2.5"),
    ("get JSON", "hotcache_get_json", "json_loads_same_bytes", "p50 <= 1.3"),
    ("put 64 B bytes, HotCache", "hotcache_put_bytes", "dict_setitem", "p50 <= 2.5"),
    ("put 64 B bytes, MemorySystem", "memory_put_bytes", "hotcache_put_bytes", "p50 <= 1.5"),
    ("lock acquire+release", "lock_uncontended", "mp_lock_uncontended", "p50 <= 3.0"),
]


def report(r: dict) -> str:
    lines = [
        f"hot paths, {r['keys']:,} keys, {r['calls']:,} calls per row, timed one by one in a second process "
        f"(timer pair alone: p50 {r['timer_pair']['p50']:.0f} ns)",
        f"{'call':32} {'ours p50/p99 ns':>18} {'peer':28} {'peer p50/p99 ns':>18} {'ratio p50/p99':>14}  required",
    ]
    for label, ours, peer, need in ROWS:
        a, b = r.get(ours), r.get(peer)
        if not a or not b:
            lines.append(f"{label:32} {'-':>18} {peer:28} {'not measured (pip install nt-memory[bench])':>18}")
            continue
        lines.append(
            f"{label:32} {a['p50']:8.0f} /{a['p99']:8.0f} {peer:28} {b['p50']:8.0f} /{b['p99']:8.0f} "
            f"{a['p50'] / b['p50']:6.2f} /{a['p99'] / b['p99']:5.2f}  {need}"
        )
    for verb in ("get", "put"):
        a, b = r[f"{verb}_many_per_key"], r[f"{verb}_loop_per_key"]
        label, peer = f"{verb}_many, {r['batch']} keys, per key", f"a loop of {verb} (same keys)"
        lines.append(
            f"{label:32} {a['p50']:8.0f} /{a['p99']:8.0f} {peer:28} {b['p50']:8.0f} /{b['p99']:8.0f} "
            f"{b['p50'] / a['p50']:6.2f}x throughput  required >= 3x"
        )
    o, m = r["lock_contended_ours"], r["lock_contended_mp"]
    lines.append(
        f"{'locks, 2 processes contending':32} {o['acquisitions_per_s']:12,.0f} /s   multiprocessing.Lock "
        f"{m['acquisitions_per_s']:12,.0f} /s  ratio {o['acquisitions_per_s'] / m['acquisitions_per_s']:.2f}  "
        f"(required >= 0.8; exclusion held: {o['exclusion_held']} / {m['exclusion_held']})"
    )
    s, q, sp = r["pubsub_sleeping"], r["mq_sleeping"], r["pubsub_spinning"]
    lines.append(
        f"{'recv, sleeping, every 200 us':32} {s['p50_us']:8.1f} /{s['p99_us']:8.1f} us  posix_ipc.MessageQueue "
        f"{q['p50_us']:8.1f} /{q['p99_us']:8.1f} us  ratio {s['p50_us'] / q['p50_us']:.2f} / "
        f"{s['p99_us'] / q['p99_us']:.2f}  (required <= 1.0 / 1.0; dropped {s['dropped']}; receiver CPU "
        f"{s['subscriber_cpu_s']:.2f} s of {s['seconds']:.1f} s, MessageQueue's {q['subscriber_cpu_s']:.2f} s; "
        f"{s['rounds']} rounds each, interleaved)"
    )
    lines.append(
        f"{'try_recv spinner':32} {sp['p50_us']:8.1f} /{sp['p99_us']:8.1f} us  p99 / MessageQueue p99 "
        f"{sp['p99_us'] / q['p99_us']:.2f}  (required <= 0.5)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = suite_parser("hot", __doc__, "20k keys, 40k calls, shorter contention and pub/sub")
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--calls", type=int, default=200_000)
    args = ap.parse_args(argv)
    if args.quick:
        r = run(20_000, 40_000, contend_s=1.0, messages=2000)
    else:
        r = run(args.keys, args.calls)
    return finish(r, report(r), args.json)


if __name__ == "__main__":
    raise SystemExit(main())
