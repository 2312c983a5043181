"""``nt-memory demo``: a small trading swarm on one host, sharing one memory system by name.

A market process publishes synthetic ticks; N agent processes attach by name and, for every tick,
run an ``@njit`` tick handler that looks their position up in L1 at nopython speed. Every few
ticks an agent retrieves ReasoningBank patterns for the situation, acts, updates the shared book
under a lock, and records a trajectory whose outcome it later observes. Agent 0 proposes
rebalances, and every agent votes on them. A live view shows progress; at the end the parent
prints a report of stable ``key: value`` lines. Every agent process is then restarted to check
its data, and the segments are removed (what a reboot does) and the data read back from LMDB.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import secrets
import signal
import time

import numpy as np

from nt_memory.kernels._jit import jit
from nt_memory.kernels.atomics import clock_ns
from nt_memory.tiers.codec import array_data_offset
from nt_memory.tiers.l1 import l1_lookup
from nt_memory.timing import percentiles

DIM = 16
TICK_TOPIC = "market/ticks"
STATS_TOPIC = "demo/stats"
PROPOSAL_TOPIC = "swarm/proposals"
DECIDE_EVERY = 40
SAMPLE = 100_000


def _config(name: str, path: str):
    from nt_memory import CacheConfig, MemoryConfig

    return MemoryConfig(name=name, storage_path=path, embedding_dim=DIM, cache_config=CacheConfig(max_entries=100_000))


@jit
def tick_handler(handle, h, key, out_buf, px, lat):
    """Exposure of an agent's position at ``px``, looked up in L1 without leaving nopython mode;
    the lookup's duration goes to ``lat[0]``."""
    t0 = clock_ns()
    r = l1_lookup(handle, h, key, out_buf)
    lat[0] = clock_ns() - t0
    if r < 0:
        return 0.0
    off = array_data_offset(out_buf)
    return out_buf[off : r >> 8].view(np.float64)[0] * px


@jit
def scan_positions(handle, h, key, out_buf, lat):
    """The tick handler called back to back (a handler scanning its positions); each lookup's
    duration goes to ``lat``."""
    one = np.zeros(1, np.int64)
    total = 0.0
    for j in range(len(lat)):
        total += tick_handler(handle, h, key, out_buf, 1.0, one)
        lat[j] = one[0]
    return total


def _market(name: str, path: str, seconds: float, rate: int, go) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from nt_memory import MemorySystem

    mem = MemorySystem.open(_config(name, path), label="market")
    try:
        go.wait(120)
        rng = np.random.default_rng(42)
        px, regime, i = 100.0, 0, 0
        end = time.monotonic() + seconds
        gap = 1.0 / rate
        nxt = time.perf_counter()
        while time.monotonic() < end:
            if i % 500 == 0:
                regime = int(rng.integers(0, 2))
            px *= 1 + (0.0004 if regime else -0.0004) + rng.normal() * 0.0008
            mem.publish(TICK_TOPIC, {"t": time.perf_counter_ns(), "i": i, "px": px, "regime": regime})
            i += 1
            nxt += gap
            # Sleep rather than spin: the agents need the cores more than the market needs
            # microsecond-exact pacing.
            delay = nxt - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        mem.publish(TICK_TOPIC, {"end": True, "ticks": i})
    finally:
        mem.close()


def _agent(name: str, path: str, agent: int, agents: int, ready, out) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from nt_memory import MemorySystem, Proposal, Trajectory, Vote

    mem = MemorySystem.open(_config(name, path), label=f"agent-{agent}")
    try:
        me = mem.namespace(f"agent_{agent}")
        me.put("position", np.array([0.0, 100.0]))
        handle = mem.l1.njit_handle()
        h = mem.l1.key_hash(me.namespace, "position")
        key = mem.l1.key_array(me.namespace, "position")
        out_buf = np.zeros(mem.l1.max_value_bytes + 8, np.uint8)
        one = np.zeros(1, np.int64)
        tick_handler(handle, h, key, out_buf, 100.0, one)
        ticks = mem.subscribe(TICK_TOPIC)
        proposals = mem.subscribe(PROPOSAL_TOPIC)
        ready.put(agent)
        rng = np.random.default_rng(agent)
        lookup_ns = np.zeros(SAMPLE, np.int64)
        get_ns, lock_ns, pubsub_us, retrieve_us = [], [], [], []
        prices: list[float] = []
        open_traj: list[tuple[Trajectory, int]] = []
        n = decided = votes = tracked = 0
        last_stats = time.monotonic()
        last_proposal = time.monotonic()
        while True:
            msg = ticks.recv(timeout=10)
            if msg is None or msg.get("end"):
                break
            pubsub_us.append((time.perf_counter_ns() - msg["t"]) / 1e3)
            px = msg["px"]
            prices.append(px)
            tick_handler(handle, h, key, out_buf, px, one)
            lookup_ns[n % SAMPLE] = one[0]
            n += 1
            # Close trajectories whose horizon has passed: the outcome is the price now.
            while open_traj and open_traj[0][1] <= n:
                t, _ = open_traj.pop(0)
                t.add_outcome(px)
                mem.track_trajectory(t.complete())
                tracked += 1
            if n % DECIDE_EVERY == 0 and len(prices) > DIM:
                rets = np.diff(np.log(prices[-DIM - 1 :]))
                emb = rets / (np.linalg.norm(rets) or 1.0)
                t0 = time.perf_counter_ns()
                patterns = mem.bank.retrieve(emb, top_k=1) if n % (DECIDE_EVERY * 5) == 0 else []
                retrieve_us.append((time.perf_counter_ns() - t0) / 1e3)
                guide = patterns[0] if patterns else None
                if guide is not None and guide.action and guide.confidence > 0.6 and not guide.pitfall:
                    action = guide.action
                else:
                    action = "buy" if rets.sum() > 0 or rng.random() < 0.2 else "sell"
                qty = 1.0 if action == "buy" else -1.0
                t0 = time.perf_counter_ns()
                with mem.lock("book", timeout=10):
                    lock_ns.append(time.perf_counter_ns() - t0)
                    t1 = time.perf_counter_ns()
                    pos = me.get("position")
                    get_ns.append(time.perf_counter_ns() - t1)
                    me.put("position", np.array([pos[0] + qty, px]))
                    book = mem.get("book", "net", 0.0)
                    mem.put("book", "net", book + qty)
                t = Trajectory(f"agent_{agent}")
                t.add_observation({"price": px}, embedding=emb)
                t.add_action(action, {"quantity": qty}, predicted_outcome=px * (1.001 if qty > 0 else 0.999))
                open_traj.append((t, n + DECIDE_EVERY))
            if agent == 0 and time.monotonic() - last_proposal > 1.0:
                last_proposal = time.monotonic()
                pid = mem.consensus.submit_proposal(Proposal("agent_0", {"action": "rebalance"}, quorum=0.6, timeout=2))
                mem.publish(PROPOSAL_TOPIC, {"id": pid})
            while (p := proposals.try_recv()) is not None:
                r = mem.consensus.vote(Vote(p["id"], f"agent_{agent}", bool(rng.random() < 0.8)))
                votes += 1
                decided += r.decided
            if time.monotonic() - last_stats > 0.5:
                last_stats = time.monotonic()
                mem.publish(
                    STATS_TOPIC,
                    {
                        "agent": agent,
                        "ticks": n,
                        "lookup_p99_ns": percentiles(lookup_ns[: min(n, SAMPLE)])["p99"] if n else 0,
                        "pubsub_p99_us": percentiles(np.asarray(pubsub_us[-2000:]) * 1e3, "us")["p99"]
                        if pubsub_us
                        else 0,
                        "trajectories": tracked,
                    },
                )
        me.put("final", {"qty": float(me.get("position")[0]), "ticks": n})
        # The nopython path warm, in a tight loop (a handler scanning its positions): per call.
        hot_lat = np.zeros(20_000, np.int64)
        scan_positions(handle, h, key, out_buf, hot_lat)
        out.put(
            {
                "agent": agent,
                "pid": os.getpid(),
                "ticks": n,
                "lookup_ns": lookup_ns[: min(n, SAMPLE)],
                "hot_lookup_ns": hot_lat,
                "get_ns": np.asarray(get_ns),
                "lock_ns": np.asarray(lock_ns),
                "pubsub_us": np.asarray(pubsub_us),
                "retrieve_us": np.asarray(retrieve_us),
                "dropped": ticks.dropped,
                "trajectories": tracked,
                "votes": votes,
            }
        )
    finally:
        mem.close()


def _verify_agent(name: str, path: str, agent: int, out) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from nt_memory import MemorySystem

    mem = MemorySystem.open(_config(name, path), label=f"agent-{agent}-restarted")
    try:
        view = mem.namespace(f"agent_{agent}")
        final, pos = view.get("final"), view.get("position")
        out.put({"agent": agent, "ok": final is not None and pos is not None and float(pos[0]) == final["qty"]})
    finally:
        mem.close()


def _collect(results, n: int, procs, timeout: float) -> list[dict]:
    rows: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(rows) < n and time.monotonic() < deadline:
        try:
            rows.append(results.get(timeout=0.5))
        except queue.Empty:
            if not any(p.is_alive() for p in procs) and results.empty():
                break
    return rows


def run(agents=4, seconds=10.0, name=None, keep=False, path=None, live=True, rate=2000) -> int:
    import shutil
    import tempfile

    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from nt_memory import MemorySystem

    console = Console()
    name = name or f"demo{secrets.token_hex(3)}"
    tmp = None
    if path is None:
        tmp = path = tempfile.mkdtemp(prefix="nt-memory-demo-")
    t0 = time.perf_counter()
    mem = MemorySystem.open(_config(name, path), label="demo")
    mem.put("demo", "warmup", b"x")
    mem.get("demo", "warmup")
    for a in range(agents):
        mem.consensus.register_voter(f"agent_{a}", 1.0)
    print(f"system: {name}")
    print(f"storage_path: {path}")
    print(f"cold_start_s: {time.perf_counter() - t0:.2f}", flush=True)
    ctx = mp.get_context("spawn")
    results, ready, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_agent, args=(name, path, a, agents, ready, results)) for a in range(agents)]
    market = ctx.Process(target=_market, args=(name, path, seconds, rate, go))
    stats_sub = mem.subscribe(STATS_TOPIC)
    rows: list[dict] = []
    restarted: list[dict] = []
    rebooted = 0
    interrupted = False
    try:
        for p in procs:
            p.start()
        market.start()
        for p, a in zip(procs, range(agents), strict=True):
            print(f"agent_{a}_pid: {p.pid}", flush=True)
        for _ in range(agents):
            try:
                ready.get(timeout=180)
            except queue.Empty:
                print("error: an agent process did not start (see its traceback above)")
                return 1
        print(f"agents: {agents} processes attached by name; market running {seconds:g}s at {rate} ticks/s", flush=True)
        go.set()
        latest: dict[int, dict] = {}
        started = time.monotonic()

        def view() -> Table:
            t = Table(title=f"nt-memory demo: {name} ({time.monotonic() - started:.0f}s)")
            for col in ("agent", "ticks", "ticks/s", "njit lookup p99", "pub/sub p99", "trajectories"):
                t.add_column(col)
            el = max(time.monotonic() - started, 1e-9)
            for a in sorted(latest):
                s = latest[a]
                t.add_row(
                    f"agent_{a}",
                    f"{s['ticks']:,}",
                    f"{s['ticks'] / el:,.0f}",
                    f"{s['lookup_p99_ns']:.0f} ns",
                    f"{s['pubsub_p99_us']:.0f} µs",
                    str(s["trajectories"]),
                )
            return t

        if live and console.is_terminal:
            with Live(view(), console=console, refresh_per_second=4, transient=True) as lv:
                while market.is_alive():
                    s = stats_sub.recv(timeout=0.25)
                    while s is not None:
                        latest[s["agent"]] = s
                        s = stats_sub.try_recv()
                    lv.update(view())
        else:
            market.join(seconds + 60)
        rows = _collect(results, agents, procs, 120)
        for p in procs + [market]:
            p.join(10)
        restarted = _collect_restarts(ctx, name, path, [r["agent"] for r in rows])
        stats = mem.stats()
        decided = sum(mem.consensus.result(pid).decided for pid in mem.consensus.proposal_ids())
        proposed = len(mem.consensus.proposal_ids())
        patterns = mem.bank.distill()
        mem.flush()
        mem.close()
        mem.unlink()
        mem = MemorySystem.open(_config(name, path), label="demo")
        rebooted = sum(mem.namespace(f"agent_{r['agent']}").get("final") is not None for r in rows)
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: cleaning up")
    finally:
        for p in procs + [market]:
            if p.is_alive():
                p.kill()
                p.join(5)
        if not mem.closed:
            mem.close()
        if not keep:
            mem.unlink()
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
    if interrupted:  # Ctrl-C: the user's choice, not an error; the shell's code for SIGINT
        print(f"interrupted: yes ({'kept: ' + name if keep else 'cleaned: yes'})")
        return 130
    if not rows:
        print("error: no agent reported")
        return 1
    lookups = np.concatenate([r["lookup_ns"] for r in rows])
    hot = np.concatenate([r["hot_lookup_ns"] for r in rows])
    gets = np.concatenate([r["get_ns"] for r in rows])
    locks = np.concatenate([r["lock_ns"] for r in rows])
    pubsub = np.concatenate([r["pubsub_us"] for r in rows])
    retrieve = np.concatenate([r["retrieve_us"] for r in rows])
    for r in sorted(rows, key=lambda r: r["agent"]):
        print(
            f"agent_{r['agent']}: pid={r['pid']} ticks={r['ticks']} trajectories={r['trajectories']} votes={r['votes']}"
        )
    print(f"agents_finished: {len(rows)}/{agents}")
    print(f"ticks: {sum(r['ticks'] for r in rows)}")
    hot_p, tick_p, get_p = percentiles(hot), percentiles(lookups), percentiles(gets)
    lock_p, pubsub_p, retrieve_p = (
        percentiles(locks, "us"),
        percentiles(pubsub * 1e3, "us"),
        percentiles(retrieve * 1e3, "us"),
    )
    print(f"njit_lookup_p50_ns: {hot_p['p50']:.0f}")
    print(f"njit_lookup_p99_ns: {hot_p['p99']:.0f}  (seed target < 100; warm, per call, clock pair included)")
    print(f"njit_lookup_in_tick_p50_ns: {tick_p['p50']:.0f}")
    print(f"njit_lookup_in_tick_p99_ns: {tick_p['p99']:.0f}  (once per tick, between Python work: cold caches)")
    print(f"l1_get_p50_ns: {get_p['p50']:.0f}")
    print(f"l1_get_p99_ns: {get_p['p99']:.0f}  (seed target < 1000)")
    print(f"lock_p50_us: {lock_p['p50']:.1f}")
    print(f"lock_p99_us: {lock_p['p99']:.1f}")
    print(f"pubsub_latency_p50_us: {pubsub_p['p50']:.0f}")
    print(f"pubsub_latency_p99_us: {pubsub_p['p99']:.0f}  (seed target < 5000)")
    print(f"retrieve_p50_us: {retrieve_p['p50']:.0f}")
    print(f"dropped: {sum(r['dropped'] for r in rows)}")
    print(f"trajectories: {sum(r['trajectories'] for r in rows)}")
    print(f"patterns_learned: {len(patterns)}")
    print(f"proposals_decided: {decided}/{proposed}")
    shm = stats["l1"]["shm_bytes"] + stats["journal"]["capacity_bytes"] + stats["l2"]["shm_bytes"]
    print(f"memory_shm_bytes: {shm}")
    print(f"restart_recovered: {sum(r['ok'] for r in restarted)}/{len(rows)}")
    print(f"reboot_recovered: {rebooted}/{len(rows)}")
    print(f"kept: {name}" if keep else "cleaned: yes")
    ok = len(rows) > 0 and all(r["ok"] for r in restarted) and rebooted == len(rows)
    return 0 if ok else 1


def _collect_restarts(ctx, name, path, agent_ids) -> list[dict]:
    out = ctx.Queue()
    procs = [ctx.Process(target=_verify_agent, args=(name, path, a, out)) for a in agent_ids]
    for p in procs:
        p.start()
    rows = _collect(out, len(procs), procs, 120)
    for p in procs:
        p.join(10)
    return rows
