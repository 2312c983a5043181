"""Cluster report: two memory systems as two hosts joined through a private nats-server (JetStream),
beside the peers a user would reach for, measured in the same run:

- replication lag: a put on host A until host B's ``get`` returns it (B polls its L1), beside a
  direct nats-py KV put followed by a get of the same key (the round trip the bridge builds on);
- a cluster lock's acquire+release (``scope="cluster"``), beside a Redis lock (``SET NX PX`` and a
  compare-and-delete script) on a private redis-server, and beside a local lock;
- a bridged topic's one-way latency (publish on A until B's subscriber has it), beside a direct
  nats-py JetStream publish received by an ordered push consumer.

    nt-memory bench cluster [--quick] [--n 500] [--json PATH]
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
import time

from nt_memory.benchmarks import finish, suite_parser
from nt_memory.servers import NatsServer, nats_missing, redis_server
from nt_memory.timing import percentiles

RELEASE_SCRIPT = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


def _lag(a, b, n: int) -> list[int]:
    """ns from A's put until B's get returns the value (B polls every 20 us)."""
    out = []
    for i in range(n):
        key = f"k{i % 64}"
        t0 = time.perf_counter_ns()
        a.put("bench", key, i)
        deadline = time.monotonic() + 10
        while b.get("bench", key) != i:
            if time.monotonic() > deadline:
                raise RuntimeError(f"put {i} did not reach host B within 10 s")
            time.sleep(20e-6)
        out.append(time.perf_counter_ns() - t0)
    return out


def _bridged(a, b, n: int) -> list[int]:
    """ns from A's publish on a bridged topic until B's subscriber returns it (one at a time)."""
    sub = b.subscribe("bench/ticks")
    time.sleep(0.3)  # B's bridge follows the stream
    out = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        a.publish("bench/ticks", i)
        if sub.recv(timeout=10) != i:
            raise RuntimeError(f"bridged message {i} did not reach host B in order within 10 s")
        out.append(time.perf_counter_ns() - t0)
    return out


def _nats_stream(url: str, n: int) -> dict:
    """Direct nats-py: a JetStream publish until an ordered push consumer of the stream has it."""

    async def run():
        import nats

        nc = await nats.connect(url)
        js = nc.jetstream()
        await js.add_stream(name="peer-bench", subjects=["peer.bench"])
        sub = await js.subscribe("peer.bench", ordered_consumer=True)
        out = []
        for i in range(n):
            t0 = time.perf_counter_ns()
            await js.publish("peer.bench", str(i).encode())
            msg = await sub.next_msg(timeout=10)
            if msg.data != str(i).encode():
                raise RuntimeError("the peer stream delivered out of order")
            out.append(time.perf_counter_ns() - t0)
        await nc.close()
        return out

    return percentiles(asyncio.run(run()), "us")


def _cluster_lock(mem, n: int, scope: str) -> list[int]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        token = mem.acquire_lock("bench-lock", timeout=10, scope=scope)
        mem.release_lock(token)
        out.append(time.perf_counter_ns() - t0)
    return out


def _nats_kv(url: str, n: int) -> dict:
    """Direct nats-py: KV put, get, and put-then-get of one key (per call, in its own loop)."""

    async def run():
        import nats

        nc = await nats.connect(url)
        kv = await nc.jetstream().create_key_value(bucket="peer-bench", history=1)
        put, get, both = [], [], []
        for i in range(n):
            t0 = time.perf_counter_ns()
            await kv.put("k", str(i).encode())
            t1 = time.perf_counter_ns()
            await kv.get("k")
            t2 = time.perf_counter_ns()
            put.append(t1 - t0)
            get.append(t2 - t1)
            both.append(t2 - t0)
        await nc.close()
        return put, get, both

    put, get, both = asyncio.run(run())
    return {"put": percentiles(put, "us"), "get": percentiles(get, "us"), "put_get": percentiles(both, "us")}


def _redis_lock(port: int, n: int) -> dict:
    import redis

    r = redis.Redis(port=port)
    release = r.register_script(RELEASE_SCRIPT)
    out = []
    for _ in range(n):
        token = secrets.token_hex(8)
        t0 = time.perf_counter_ns()
        while not r.set("bench-lock", token, nx=True, px=10_000):
            time.sleep(0.001)
        release(keys=["bench-lock"], args=[token])
        out.append(time.perf_counter_ns() - t0)
    return percentiles(out, "us")


def measure(n: int) -> dict:
    from nt_memory import ClusterConfig, MemoryConfig, MemorySystem

    results: dict = {"n": n}
    tmp = tempfile.mkdtemp(prefix="ntm-bench-cluster-")
    try:
        with NatsServer(f"{tmp}/nats") as server:
            cfg = ClusterConfig(url=server.url, bucket="bench", topics=("bench/",))
            tag = secrets.token_hex(3)
            a = MemorySystem.open(MemoryConfig(name=f"bca{tag}", storage_path=f"{tmp}/a", cluster=cfg))
            b = MemorySystem.open(MemoryConfig(name=f"bcb{tag}", storage_path=f"{tmp}/b", cluster=cfg))
            try:
                deadline = time.monotonic() + 30
                while not all(m.stats()["cluster"]["this_process_bridges"] for m in (a, b)):
                    if time.monotonic() > deadline:
                        raise RuntimeError("the bridges did not start within 30 s")
                    time.sleep(0.01)
                _lag(a, b, 20)  # warm: kernels, connections
                results["replication_lag"] = percentiles(_lag(a, b, n), "us")
                _cluster_lock(a, 10, "cluster")
                results["cluster_lock"] = percentiles(_cluster_lock(a, n, "cluster"), "us")
                results["local_lock"] = percentiles(_cluster_lock(a, n, "local"), "us")
                _bridged(a, b, 20)
                results["bridged_pubsub"] = percentiles(_bridged(a, b, n), "us")
                results["bridge_lag"] = {
                    k: b.stats()["cluster"][k] for k in ("replication_lag_p50_s", "replication_lag_p99_s")
                }
            finally:
                for mem in (a, b):
                    mem.close()
                    mem.unlink()
            results["nats_kv"] = _nats_kv(server.url, n)
            results["nats_stream"] = _nats_stream(server.url, n)
        with redis_server() as port:
            results["redis_lock"] = _redis_lock(port, n) if port else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def _row(label: str, p: dict | None) -> str:
    if p is None:
        return f"  {label:52} not measured (redis-server or redis-py missing)"
    return f"  {label:52} p50 {p['p50']:9.1f} us   p99 {p['p99']:9.1f} us"


def _ratio(label: str, ours: dict, peer: dict) -> str:
    return f"  {label}: p50 {ours['p50'] / peer['p50']:.2f}x, p99 {ours['p99'] / peer['p99']:.2f}x"


def report(r: dict) -> str:
    lines = [f"cluster: two hosts through one local nats-server (JetStream), {r['n']} rounds each"]
    lines.append(_row("replication lag (put on A -> get on B)", r["replication_lag"]))
    lines.append(_row("  peer: nats-py KV put then get, direct", r["nats_kv"]["put_get"]))
    lines.append(_row("  peer: nats-py KV put", r["nats_kv"]["put"]))
    lines.append(_row("  peer: nats-py KV get", r["nats_kv"]["get"]))
    lines.append(_row("cluster lock acquire+release", r["cluster_lock"]))
    lines.append(_row("  peer: Redis SET NX PX + compare-and-delete", r["redis_lock"]))
    lines.append(_row("  local lock acquire+release (same handle)", r["local_lock"]))
    lines.append(_ratio("replication lag / nats-py put+get", r["replication_lag"], r["nats_kv"]["put_get"]))
    if r["redis_lock"]:
        lines.append(_ratio("cluster lock / Redis lock", r["cluster_lock"], r["redis_lock"]))
    lines.append(_row("bridged pub/sub, one way (publish on A -> recv on B)", r["bridged_pubsub"]))
    lines.append(_row("  peer: nats-py JetStream publish -> ordered consumer", r["nats_stream"]))
    lines.append(_ratio("bridged pub/sub / nats-py stream", r["bridged_pubsub"], r["nats_stream"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = suite_parser("cluster", __doc__, "100 rounds")
    ap.add_argument("--n", type=int, default=500)
    args = ap.parse_args(argv)
    missing = nats_missing()
    if missing:
        print(f"cluster: not measured: {missing}")
        return 0
    r = measure(100 if args.quick else args.n)
    return finish(r, report(r), args.json)


if __name__ == "__main__":
    raise SystemExit(main())
