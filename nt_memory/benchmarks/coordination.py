"""Coordination report: cross-process publish -> recv latency (64-byte messages; sleeping and
spinning subscriber) and throughput, beside multiprocessing.Queue, multiprocessing.Pipe and
posix_ipc.MessageQueue; lock acquire+release uncontended and with 2 contending processes, beside
multiprocessing.Lock and fcntl.flock. All measured in the same run.

    nt-memory bench coordination [--quick] [--n 20000] [--json PATH]
"""

from __future__ import annotations

import fcntl
import multiprocessing as mp
import os
import secrets
import shutil
import tempfile
import time

import posix_ipc

from nt_memory import MemoryConfig, MemorySystem
from nt_memory.benchmarks import finish, suite_parser
from nt_memory.timing import percentiles

MSG = b"m" * 56  # + the 8-byte send timestamp = 64 bytes


# ------------------------------------------------------------------------------- pub/sub peers
def _nt_receiver(name, path, n, spin, ready, out):
    mem = MemorySystem.open(MemoryConfig(name=name, storage_path=path), label="bench-recv")
    sub = mem.subscribe("bench")
    ready.set()
    lat = []
    while len(lat) < n:
        m = sub.try_recv() if spin else sub.recv(timeout=5)
        if m is None:
            if not spin:
                break
            continue
        lat.append(time.perf_counter_ns() - int.from_bytes(m[:8], "little"))
    out.put((lat, sub.dropped))
    mem.close()


def _baseline_receiver(kind, endpoint, n, out):
    """Receive n timestamped messages from a multiprocessing Queue, a Pipe end or a named POSIX
    message queue, and report their latencies."""
    if kind == "mq":
        endpoint = posix_ipc.MessageQueue(endpoint)
        recv = lambda: endpoint.receive()[0]  # noqa: E731
    elif kind == "pipe":
        recv = endpoint.recv_bytes
    else:
        recv = endpoint.get
    lat = []
    for _ in range(n):
        m = recv()
        lat.append(time.perf_counter_ns() - int.from_bytes(m[:8], "little"))
    out.put(lat)


def _paced_send(send, n, gap_s):
    for _ in range(n):
        send(time.perf_counter_ns().to_bytes(8, "little") + MSG)
        deadline = time.perf_counter() + gap_s
        while time.perf_counter() < deadline:
            pass


def _baseline(ctx, kind, endpoint, send, n, gap) -> dict:
    out = ctx.Queue()
    p = ctx.Process(target=_baseline_receiver, args=(kind, endpoint, n, out))
    p.start()
    time.sleep(0.2)
    _paced_send(send, n, gap)
    r = percentiles(out.get(timeout=120), "us")
    p.join(30)
    return r


def pubsub(n: int, ctx) -> dict:
    r: dict = {}
    root = tempfile.mkdtemp()
    name = f"cb{secrets.token_hex(3)}"
    mem = MemorySystem.open(MemoryConfig(name=name, storage_path=root))
    gap = 0.0002  # paced: latency, not queueing, is measured
    try:
        mem.subscribe("bench")
        for spin in (False, True):
            ready, out = ctx.Event(), ctx.Queue()
            p = ctx.Process(target=_nt_receiver, args=(name, root, n, spin, ready, out))
            p.start()
            ready.wait(60)
            time.sleep(0.2)
            _paced_send(lambda b: mem.publish("bench", b), n, gap)
            lat, dropped = out.get(timeout=120)
            p.join(30)
            r["nt_memory_" + ("spinning" if spin else "sleeping")] = percentiles(lat, "us") | {"dropped": dropped}
        # throughput: publish as fast as possible (one publisher)
        t0 = time.perf_counter()
        for _ in range(n):
            mem.publish("bench", MSG)
        r["nt_memory_publish_per_s"] = n / (time.perf_counter() - t0)
    finally:
        mem.close()
        mem.unlink()
        shutil.rmtree(root, ignore_errors=True)
    q = ctx.Queue()
    r["multiprocessing_Queue"] = _baseline(ctx, "queue", q, q.put, n, gap)
    a, b = ctx.Pipe()
    r["multiprocessing_Pipe"] = _baseline(ctx, "pipe", b, a.send_bytes, n, gap)
    qname = f"/ntmbench{secrets.token_hex(3)}"
    mq = posix_ipc.MessageQueue(qname, posix_ipc.O_CREX, max_messages=10, max_message_size=128)
    try:
        r["posix_ipc_MessageQueue"] = _baseline(ctx, "mq", qname, mq.send, n, gap)
    finally:
        mq.close()
        mq.unlink()
    return r


# ----------------------------------------------------------------------------------- locks
def _nt_contender(name, path, n, out):
    mem = MemorySystem.open(MemoryConfig(name=name, storage_path=path), label="bench-lock")
    lat = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        t = mem.acquire_lock("bench", timeout=30)
        mem.release_lock(t)
        lat.append(time.perf_counter_ns() - t0)
    out.put(lat)
    mem.close()


def _mp_contender(lock, n, out):
    lat = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        with lock:
            pass
        lat.append(time.perf_counter_ns() - t0)
    out.put(lat)


def _flock_contender(path, n, out):
    fd = os.open(path, os.O_RDWR)
    lat = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fcntl.flock(fd, fcntl.LOCK_EX)
        fcntl.flock(fd, fcntl.LOCK_UN)
        lat.append(time.perf_counter_ns() - t0)
    os.close(fd)
    out.put(lat)


def locks(n: int, ctx) -> dict:
    r: dict = {}
    root = tempfile.mkdtemp()
    name = f"cl{secrets.token_hex(3)}"
    mem = MemorySystem.open(MemoryConfig(name=name, storage_path=root))
    try:
        lat = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            t = mem.acquire_lock("bench")
            mem.release_lock(t)
            lat.append(time.perf_counter_ns() - t0)
        r["nt_memory_uncontended"] = percentiles(lat, "us")
        out = ctx.Queue()
        procs = [ctx.Process(target=_nt_contender, args=(name, root, n // 4, out)) for _ in range(2)]
        for p in procs:
            p.start()
        r["nt_memory_2_processes"] = percentiles(sum((out.get(timeout=300) for _ in procs), []), "us")
        for p in procs:
            p.join(30)
    finally:
        mem.close()
        mem.unlink()
    lk = ctx.Lock()
    lat = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        with lk:
            pass
        lat.append(time.perf_counter_ns() - t0)
    r["multiprocessing_Lock_uncontended"] = percentiles(lat, "us")
    out = ctx.Queue()
    procs = [ctx.Process(target=_mp_contender, args=(lk, n // 4, out)) for _ in range(2)]
    for p in procs:
        p.start()
    r["multiprocessing_Lock_2_processes"] = percentiles(sum((out.get(timeout=300) for _ in procs), []), "us")
    for p in procs:
        p.join(30)
    path = os.path.join(root, "flock")
    open(path, "w").close()
    fd = os.open(path, os.O_RDWR)
    lat = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fcntl.flock(fd, fcntl.LOCK_EX)
        fcntl.flock(fd, fcntl.LOCK_UN)
        lat.append(time.perf_counter_ns() - t0)
    os.close(fd)
    r["flock_uncontended"] = percentiles(lat, "us")
    out = ctx.Queue()
    procs = [ctx.Process(target=_flock_contender, args=(path, n // 4, out)) for _ in range(2)]
    for p in procs:
        p.start()
    r["flock_2_processes"] = percentiles(sum((out.get(timeout=300) for _ in procs), []), "us")
    for p in procs:
        p.join(30)
    shutil.rmtree(root, ignore_errors=True)
    return r


def report(r: dict) -> str:
    lines = ["Cross-process coordination; latencies in microseconds"]
    lines.append(f"{'what':34} {'p50':>9} {'p99':>9} {'p999':>9}")
    for section in ("pubsub", "locks"):
        for k, v in r[section].items():
            if isinstance(v, dict):
                lines.append(f"{k:34} {v['p50']:9.1f} {v['p99']:9.1f} {v['p999']:9.1f}")
    ps = r["pubsub"]
    lines.append("")
    lines.append(
        f"publish -> recv p99 (sleeping subscriber) {ps['nt_memory_sleeping']['p99']:.0f} us "
        "vs seed target < 5000 us; "
        f"multiprocessing.Queue p99 {ps['multiprocessing_Queue']['p99']:.0f} us; "
        f"dropped {ps['nt_memory_sleeping']['dropped']}; one publisher {ps['nt_memory_publish_per_s']:,.0f} msgs/s"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = suite_parser("coordination", __doc__, "2,000 messages and lock rounds")
    ap.add_argument("--n", type=int, default=20_000)
    args = ap.parse_args(argv)
    n = 2_000 if args.quick else args.n
    ctx = mp.get_context("spawn")
    r = {"pubsub": pubsub(n, ctx), "locks": locks(n, ctx)}
    return finish(r, report(r), args.json)


if __name__ == "__main__":
    raise SystemExit(main())
