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

import contextlib
import multiprocessing as mp
import os
import queue
import secrets
import signal
import threading
import time
from collections.abc import Iterator

import numpy as np

from nt_memory.kernels._jit import jit
from nt_memory.kernels.atomics import clock_ns
from nt_memory.tiers.codec import array_data_offset
from nt_memory.tiers.l1 import l1_lookup
from nt_memory.timing import SEED_TARGETS, human, meets, percentiles

DIM = 16
TICK_TOPIC = "market/ticks"
STATS_TOPIC = "demo/stats"
PROPOSAL_TOPIC = "swarm/proposals"
DECIDE_EVERY = 40
SAMPLE = 100_000


def _config(name: str, path: str, cluster=None):
    from nt_memory import CacheConfig, MemoryConfig

    return MemoryConfig(
        name=name,
        storage_path=path,
        embedding_dim=DIM,
        cache_config=CacheConfig(max_entries=100_000),
        cluster=cluster,
    )


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


def _position_lookup(mem, me) -> tuple:
    """Store an agent's opening position and make what its tick handler needs to look it up from
    nopython code: (handle, hash, key, output buffer, one-slot latency array); one call of the
    handler compiles it, or loads it from the cache."""
    me.put("position", np.array([0.0, 100.0]))
    handle = mem.l1.njit_handle()
    h = mem.l1.key_hash(me.namespace, "position")
    key = mem.l1.key_array(me.namespace, "position")
    out_buf = np.zeros(mem.l1.max_value_bytes + 8, np.uint8)
    one = np.zeros(1, np.int64)
    tick_handler(handle, h, key, out_buf, 100.0, one)
    return handle, h, key, out_buf, one


def _market(name: str, path: str, seconds: float, rate: int, go, cluster=None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from nt_memory import MemorySystem

    mem = MemorySystem.open(_config(name, path, cluster), label="market")
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
        handle, h, key, out_buf, one = _position_lookup(mem, me)
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
        # The same for a Python get of the position, back to back (caches warm).
        clock = time.perf_counter_ns
        warm_get = np.zeros(20_000, np.int64)
        for j in range(len(warm_get)):
            t0 = clock()
            me.get("position")
            warm_get[j] = clock() - t0
        out.put(
            {
                "agent": agent,
                "pid": os.getpid(),
                "ticks": n,
                "lookup_ns": lookup_ns[: min(n, SAMPLE)],
                "hot_lookup_ns": hot_lat,
                "warm_get_ns": warm_get,
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


class _Steps:
    """Progress lines, ``[ 12.3s] text``, timed from the demo's start; a phase that runs longer than
    a few seconds says it is still running."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def say(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.t0:5.1f}s] {text}", flush=True)

    @contextlib.contextmanager
    def phase(self, text: str, every: float = 5.0) -> Iterator[dict]:
        """Say ``text ...``; every ``every`` seconds, that it is still running (with what the body
        put in ``note["now"]``); at the end, how long it took (and ``note["done"]``)."""
        start = time.perf_counter()
        note: dict = {}
        self.say(f"{text} ...")
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(every):
                now = note.get("now")
                self.say(f"  ... {text}: {time.perf_counter() - start:.0f}s{', ' + now if now else ''}")

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        try:
            yield note
        finally:
            stop.set()
            ticker.join()
        done = note.get("done")
        self.say(f"{text}: {time.perf_counter() - start:.1f}s{' (' + done + ')' if done else ''}")


@contextlib.contextmanager
def _counting_compiles(steps: _Steps, note: dict) -> Iterator[list]:
    """Count numba compilations (a cache hit is not one); say when the first one starts, which
    means this is the first run on this machine (or the first since nt-memory changed)."""
    from numba.core import event

    compiled: list[str] = []
    depth = [0]

    class Listener(event.Listener):
        def on_start(self, ev) -> None:
            if not compiled and depth[0] == 0:
                steps.say("  compiling kernels: first run only, later runs load them from numba's cache")
            depth[0] += 1

        def on_end(self, ev) -> None:
            depth[0] -= 1
            if depth[0] == 0:
                compiled.append(getattr(ev.data.get("dispatcher"), "__qualname__", "?"))
                note["now"] = f"{len(compiled)} compiled"

    with event.install_listener("numba:compile", Listener()):
        yield compiled


def _warm_up(name: str, path: str) -> None:
    """Run once, on a scratch system, every compiled path an agent and the market take, so that
    the first run compiles each kernel once here instead of in every agent at once (on two cores,
    five processes compiling the same code took over a minute) and later runs load them all."""
    from nt_memory import MemorySystem, Proposal, Trajectory, Vote

    mem = MemorySystem.open(_config(name, path), label="demo-warm-up")
    try:
        me = mem.namespace("agent_0")
        handle, h, key, out_buf, _ = _position_lookup(mem, me)
        me.get("position")
        mem.put("book", "net", 1.0)
        mem.get("book", "net", 0.0)
        scan_positions(handle, h, key, out_buf, np.zeros(4, np.int64))
        sub = mem.subscribe(TICK_TOPIC)
        mem.publish(TICK_TOPIC, {"t": 0, "i": 0, "px": 100.0, "regime": 0})
        sub.recv(timeout=1)
        sub.try_recv()
        with mem.lock("book", timeout=1):
            pass
        emb = np.ones(DIM) / np.sqrt(DIM)
        t = Trajectory("agent_0")
        t.add_observation({"price": 100.0}, embedding=emb)
        t.add_action("buy", {"quantity": 1.0}, predicted_outcome=100.1)
        t.add_outcome(100.2)
        mem.track_trajectory(t.complete())
        mem.bank.distill()
        mem.bank.retrieve(emb, top_k=1)
        mem.consensus.register_voter("agent_0", 1.0)
        pid = mem.consensus.submit_proposal(Proposal("agent_0", {"action": "rebalance"}, quorum=0.6, timeout=2))
        mem.consensus.vote(Vote(pid, "agent_0", True))
        mem.stats()
        mem.flush()
    finally:
        mem.close()
        mem.unlink()


def _load_kernels(steps: _Steps, scratch_name: str) -> None:
    """The "loading kernels" phase: :func:`_warm_up` on a scratch system, saying what compiled."""
    import shutil
    import tempfile

    with steps.phase("loading kernels") as note, _counting_compiles(steps, note) as compiled:
        scratch = tempfile.mkdtemp(prefix="nt-memory-demo-warm-")
        try:
            _warm_up(scratch_name, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        note["done"] = f"compiled {len(compiled)} kernels, now cached" if compiled else "all from the cache"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _judged(key: str, value: float, unit: str, row: str | None = None, note: str = "") -> str:
    """A report line: ``key: value`` (stable, in the key's unit), then the figure in a unit a
    reader would pick, the seed's target for ``row`` with a verdict, and ``note``."""
    shown = f"{value:.1f}" if value < 100 and unit != "ns" else f"{value:.0f}"
    readable = human(value, unit)
    extra = [] if readable.split()[0] == shown else [readable]
    if row is not None:
        stat, bound, target_unit = SEED_TARGETS[row]
        bound_text = human(bound, target_unit)
        extra.append(f"seed target {stat} < {bound_text}: {'met' if meets(row, value) else 'MISSED'}")
    if note:
        extra.append(note)
    return f"{key}: {shown}  ({'; '.join(extra)})" if extra else f"{key}: {shown}"


def run(agents=4, seconds=6.0, name=None, keep=False, path=None, live=True, rate=2000) -> int:
    import shutil
    import tempfile

    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from nt_memory import MemorySystem

    steps = _Steps()
    console = Console()
    name = name or f"demo{secrets.token_hex(3)}"
    tmp = None
    if path is None:
        tmp = path = tempfile.mkdtemp(prefix="nt-memory-demo-")
    cores = _cores()
    processes = agents + 2
    print(f"system: {name}")
    print(f"storage_path: {path}")
    print(f"machine: {cores} cores; {processes} processes share them ({agents} agents, the market, this one)")
    t0 = time.perf_counter()
    _load_kernels(steps, f"{name}w")
    mem = MemorySystem.open(_config(name, path), label="demo")
    for a in range(agents):
        mem.consensus.register_voter(f"agent_{a}", 1.0)
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
        with steps.phase(f"starting {agents} agent processes and the market") as note:
            for p in procs:
                p.start()
            market.start()
            for p, a in zip(procs, range(agents), strict=True):
                print(f"agent_{a}_pid: {p.pid}", flush=True)
            for n in range(1, agents + 1):
                try:
                    a = ready.get(timeout=180)
                except queue.Empty:
                    print("error: an agent process did not start (see its traceback above)")
                    return 1
                steps.say(f"  agent_{a} attached to {name} by name ({n}/{agents})")
                note["now"] = f"{n}/{agents} attached"
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

        def drain() -> None:
            s = stats_sub.recv(timeout=0.25)
            while s is not None:
                latest[s["agent"]] = s
                s = stats_sub.try_recv()

        with steps.phase(f"market: {rate} ticks/s for {seconds:g}s", every=2.0) as note:
            if live and console.is_terminal:
                with Live(view(), console=console, refresh_per_second=4, transient=True) as lv:
                    while market.is_alive():
                        drain()
                        lv.update(view())
            else:
                deadline = time.monotonic() + seconds + 60
                while market.is_alive() and time.monotonic() < deadline:
                    drain()
                    ticks = sum(s["ticks"] for s in latest.values())
                    note["now"] = f"{ticks:,} ticks handled by {len(latest)} agents"
            rows = _collect(results, agents, procs, 120)
            for p in procs + [market]:
                p.join(10)
            note["done"] = f"{len(rows)}/{agents} agents reported"
        with steps.phase(f"restart: {len(rows)} fresh agent processes read their data back") as note:
            restarted = _collect_restarts(ctx, name, path, [r["agent"] for r in rows])
            note["done"] = f"{sum(r['ok'] for r in restarted)}/{len(rows)} intact"
        stats = mem.stats()
        decided = sum(mem.consensus.result(pid).decided for pid in mem.consensus.proposal_ids())
        proposed = len(mem.consensus.proposal_ids())
        tracked = sum(r["trajectories"] for r in rows)
        with steps.phase(f"ReasoningBank: distilling patterns from {tracked:,} trajectories") as note:
            patterns = mem.bank.distill()
            note["done"] = f"{len(patterns)} patterns"
        with steps.phase("reboot: shared memory removed, the data read back from LMDB") as note:
            mem.flush()
            mem.close()
            mem.unlink()
            mem = MemorySystem.open(_config(name, path), label="demo")
            rebooted = sum(mem.namespace(f"agent_{r['agent']}").get("final") is not None for r in rows)
            note["done"] = f"{rebooted}/{len(rows)} agents' data back"
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
    _report(rows, agents, stats, patterns, decided, proposed, cores, processes)
    print(f"restart_recovered: {sum(r['ok'] for r in restarted)}/{len(rows)}")
    print(f"reboot_recovered: {rebooted}/{len(rows)}")
    print(f"total_s: {time.perf_counter() - steps.t0:.1f}")
    print(f"kept: {name}" if keep else "cleaned: yes")
    ok = len(rows) > 0 and all(r["ok"] for r in restarted) and rebooted == len(rows)
    return 0 if ok else 1


def _report(rows, agents, stats, patterns, decided, proposed, cores, processes) -> None:
    """The report's ``key: value`` lines (their keys are stable; the text in brackets is for a
    reader: the figure in a sensible unit, the seed's target and a verdict)."""

    def joined(field: str) -> np.ndarray:
        return np.concatenate([r[field] for r in rows])

    for r in sorted(rows, key=lambda r: r["agent"]):
        print(
            f"agent_{r['agent']}: pid={r['pid']} ticks={r['ticks']} trajectories={r['trajectories']} votes={r['votes']}"
        )
    print(f"agents_finished: {len(rows)}/{agents}")
    print(f"ticks: {sum(r['ticks'] for r in rows)}")
    print(f"cores: {cores}")
    print(f"processes: {processes}")
    hot, tick = percentiles(joined("hot_lookup_ns")), percentiles(joined("lookup_ns"))
    warm_get, get = percentiles(joined("warm_get_ns")), percentiles(joined("get_ns"))
    lock = percentiles(joined("lock_ns"), "us")
    pubsub, retrieve = percentiles(joined("pubsub_us") * 1e3, "us"), percentiles(joined("retrieve_us") * 1e3, "us")
    in_tick = "once per tick, between Python work: caches cold"
    print(_judged("njit_lookup_p50_ns", hot["p50"], "ns"))
    warm = "warm, per call, clock pair included"
    print(_judged("njit_lookup_p99_ns", hot["p99"], "ns", "position_lookup_njit", warm))
    print(_judged("njit_lookup_in_tick_p50_ns", tick["p50"], "ns"))
    print(_judged("njit_lookup_in_tick_p99_ns", tick["p99"], "ns", "position_lookup_njit", in_tick))
    print(_judged("l1_get_p50_ns", warm_get["p50"], "ns"))
    print(_judged("l1_get_p99_ns", warm_get["p99"], "ns", "l1_get", "Python get of a float64[2], back to back"))
    print(_judged("l1_get_in_tick_p50_ns", get["p50"], "ns"))
    print(_judged("l1_get_in_tick_p99_ns", get["p99"], "ns", "l1_get", "once per decision, right after the lock"))
    print(_judged("lock_p50_us", lock["p50"], "us", None, "no seed target"))
    print(_judged("lock_p99_us", lock["p99"], "us", None, f"{agents} agents take the same lock"))
    print(_judged("pubsub_latency_p50_us", pubsub["p50"], "us"))
    print(_judged("pubsub_latency_p99_us", pubsub["p99"], "us", "cross_agent_pubsub", "market -> agent, one way"))
    print(_judged("retrieve_p50_us", retrieve["p50"], "us"))
    print(_judged("retrieve_p95_us", retrieve["p95"], "us", "vector_search", "ReasoningBank retrieve, top 1"))
    print(f"dropped: {sum(r['dropped'] for r in rows)}")
    print(f"trajectories: {sum(r['trajectories'] for r in rows)}")
    print(f"patterns_learned: {len(patterns)}")
    print(f"proposals_decided: {decided}/{proposed}")
    shm = stats["l1"]["shm_bytes"] + stats["journal"]["capacity_bytes"] + stats["l2"]["shm_bytes"]
    print(f"memory_shm_bytes: {shm}  ({human(shm / 2**20, 'MiB')} of shared memory for L1, journal and embeddings)")
    if processes > cores:
        print(
            f"hint: {processes} busy processes share {cores} cores, so a p99 here includes waiting for a core "
            "(milliseconds); `nt-memory bench` measures the seed's targets on a quieter host"
        )


def _collect_restarts(ctx, name, path, agent_ids) -> list[dict]:
    out = ctx.Queue()
    procs = [ctx.Process(target=_verify_agent, args=(name, path, a, out)) for a in agent_ids]
    for p in procs:
        p.start()
    rows = _collect(out, len(procs), procs, 120)
    for p in procs:
        p.join(10)
    return rows


# ------------------------------------------------------------------------------ --cluster
BOOK_LOCK = "book"
PROPOSAL_KEY = ("swarm", "proposal")


def _cluster_agent(name: str, path: str, cluster, host: str, agent: int, ready, out) -> None:
    """An agent of one "host" of the cluster demo: the tick handler's lookups stay local (L1); the
    shared book is updated under a cluster lock and read and confirmed at the bucket; votes go to
    cluster proposals whose id another host wrote into a replicated key."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from nt_memory import MemorySystem, Vote

    mem = MemorySystem.open(_config(name, path, cluster), label=f"{host}-agent-{agent}")
    try:
        me = mem.namespace(f"agent_{agent}")
        handle, h, key, out_buf, one = _position_lookup(mem, me)
        ticks = mem.subscribe(TICK_TOPIC)
        ready.put(agent)
        rng = np.random.default_rng(agent)
        lookup_ns = np.zeros(SAMPLE, np.int64)
        lock_us: list[float] = []
        section_us: list[float] = []
        n = votes = decided = 0
        net = 0.0
        voted: set[str] = set()
        while True:
            msg = ticks.recv(timeout=10)
            if msg is None or msg.get("end"):
                break
            tick_handler(handle, h, key, out_buf, msg["px"], one)
            lookup_ns[n % SAMPLE] = one[0]
            n += 1
            if n % (DECIDE_EVERY * 4) == 0:
                qty = 1.0 if rng.random() < 0.6 else -1.0
                t0 = time.perf_counter_ns()
                with mem.lock(BOOK_LOCK, timeout=30, scope="cluster"):
                    t1 = time.perf_counter_ns()
                    book = mem.get_consistent("book", "net", 0.0)  # the last holder's write, on any host
                    mem.put("book", "net", book + qty)
                    mem.get_consistent("book", "net")  # out to the bucket before the lock goes
                    section_us.append((time.perf_counter_ns() - t1) / 1e3)
                lock_us.append((t1 - t0) / 1e3)
                net += qty
                pos = me.get("position")
                me.put("position", np.array([pos[0] + qty, msg["px"]]))
                pid = mem.get(*PROPOSAL_KEY)  # written on host A, replicated here
                if pid and pid not in voted:
                    voted.add(pid)
                    r = mem.consensus.vote(Vote(pid, f"{host}_agent_{agent}", bool(rng.random() < 0.8)))
                    votes += 1
                    decided += r.decided
        me.put("final", {"qty": float(me.get("position")[0]), "ticks": n})
        out.put(
            {
                "host": host,
                "agent": agent,
                "ticks": n,
                "net": net,
                "lookup_ns": lookup_ns[: min(n, SAMPLE)],
                "lock_us": np.asarray(lock_us),
                "section_us": np.asarray(section_us),
                "votes": votes,
            }
        )
    finally:
        mem.close()


def _proposer(mem, stop: threading.Event, every: float, proposed: list) -> None:
    """Host A's proposer: a cluster proposal every ``every`` seconds, its id in a replicated key."""
    from nt_memory import Proposal

    while not stop.wait(every):
        pid = mem.consensus.submit_proposal(Proposal("host_a", {"action": "rebalance"}, quorum=0.5), scope="cluster")
        mem.put(*PROPOSAL_KEY, pid)
        proposed.append(pid)


def run_cluster(agents: int = 4, seconds: float = 6.0, keep: bool = False, path: str | None = None, rate=1000) -> int:
    """``nt-memory demo --cluster``: the swarm as two "hosts" (two systems, each with its own name,
    storage path, market feed and agents) joined through one private nats-server."""
    import shutil
    import tempfile

    from nt_memory import ClusterConfig, MemorySystem
    from nt_memory.servers import NatsServer, nats_missing

    missing = nats_missing()
    if missing:
        print(f"error: demo --cluster needs a NATS server: {missing}")
        return 1
    steps = _Steps()
    tmp = None
    if path is None:
        tmp = path = tempfile.mkdtemp(prefix="nt-memory-cluster-demo-")
    tag = secrets.token_hex(3)
    hosts = {"host_a": f"demoa{tag}", "host_b": f"demob{tag}"}
    per_host = max(1, agents // 2)
    cores = _cores()
    print(f"hosts: {', '.join(f'{h}={n}' for h, n in hosts.items())}")
    print(f"storage_path: {path}")
    print(f"machine: {cores} cores; {2 * per_host + 3} processes share them ({per_host} agents and a market per host)")
    _load_kernels(steps, f"demow{tag}")
    server = NatsServer(os.path.join(path, "nats")).start()
    steps.say(f"nats-server (JetStream) on {server.url}, pid {server.proc.pid if server.proc else '?'}")
    cluster = ClusterConfig(url=server.url, bucket=f"demo{tag}")
    ctx = mp.get_context("spawn")
    results, ready, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    mems: dict[str, MemorySystem] = {}
    procs: list = []
    stop = threading.Event()
    proposed: list[str] = []
    rows: list[dict] = []
    try:
        for host, name in hosts.items():
            mems[host] = MemorySystem.open(_config(name, os.path.join(path, host), cluster), label=f"{host}-demo")
        for host in hosts:
            for a in range(per_host):
                mems["host_a"].consensus.register_voter(f"{host}_agent_{a}", 1.0, scope="cluster")
        with steps.phase(f"starting {per_host} agents and a market on each host") as note:
            for host, name in hosts.items():
                hpath = os.path.join(path, host)
                procs += [
                    ctx.Process(target=_cluster_agent, args=(name, hpath, cluster, host, a, ready, results))
                    for a in range(per_host)
                ]
                procs.append(ctx.Process(target=_market, args=(name, hpath, seconds, rate, go, cluster)))
            for p in procs:
                p.start()
            for n in range(1, 2 * per_host + 1):
                ready.get(timeout=180)
                note["now"] = f"{n}/{2 * per_host} attached"
        go.set()
        proposer = threading.Thread(target=_proposer, args=(mems["host_a"], stop, 1.0, proposed), daemon=True)
        proposer.start()
        with steps.phase(
            f"market: {rate} ticks/s on each host for {seconds:g}s; the book under a cluster lock"
        ) as note:
            rows = _collect(results, 2 * per_host, procs, seconds + 180)
            note["done"] = f"{len(rows)}/{2 * per_host} agents reported"
        stop.set()
        proposer.join(10)
        for p in procs:
            p.join(10)
        ma, mb = mems["host_a"], mems["host_b"]
        with steps.phase("checking both hosts agree") as note:
            expected = sum(r["net"] for r in rows)
            book_a, book_b = ma.get_consistent("book", "net", 0.0), mb.get_consistent("book", "net", 0.0)
            deadline = time.monotonic() + 30
            finals = 0
            while time.monotonic() < deadline:
                finals = sum(
                    other.namespace(f"agent_{r['agent']}").get("final") is not None
                    for r in rows
                    for other in [mems["host_b" if r["host"] == "host_a" else "host_a"]]
                )
                if finals == len(rows) and ma.get("book", "net", 0.0) == mb.get("book", "net", 0.0) == book_a:
                    break
                time.sleep(0.05)
            note["done"] = f"book {book_a:g} on A, {book_b:g} on B, {expected:g} expected"
        decided = sum(ma.consensus.result(pid).decided for pid in proposed)
        stats_a, stats_b = ma.stats()["cluster"], mb.stats()["cluster"]
    except KeyboardInterrupt:
        print("interrupted: cleaning up")
        return 130
    finally:
        stop.set()
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        for mem in mems.values():
            mem.close()
            if not keep:
                mem.unlink()
        server.stop()
        if tmp and not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    if not rows:
        print("error: no agent reported")
        return 1

    def joined(field: str) -> np.ndarray:
        return np.concatenate([r[field] for r in rows])

    for r in sorted(rows, key=lambda r: (r["host"], r["agent"])):
        print(f"{r['host']}_agent_{r['agent']}: ticks={r['ticks']} book_changes={len(r['lock_us'])} votes={r['votes']}")
    tick = percentiles(joined("lookup_ns"))
    lock, section = percentiles(joined("lock_us") * 1e3, "us"), percentiles(joined("section_us") * 1e3, "us")
    print(f"agents_finished: {len(rows)}/{2 * per_host}")
    print(_judged("njit_lookup_in_tick_p99_ns", tick["p99"], "ns", "position_lookup_njit", "local L1, as on one host"))
    print(_judged("cluster_lock_wait_p50_us", lock["p50"], "us", None, f"{2 * per_host} agents on 2 hosts, one lock"))
    print(_judged("cluster_lock_wait_p99_us", lock["p99"], "us"))
    print(_judged("book_update_p50_us", section["p50"], "us", None, "consistent read, put, confirmed at the bucket"))
    for host, st in (("host_a", stats_a), ("host_b", stats_b)):
        lag50, lag99 = st["replication_lag_p50_s"], st["replication_lag_p99_s"]
        if lag50 is not None:
            print(
                _judged(f"{host}_replication_lag_p50_us", lag50 * 1e6, "us", None, "another host's put, applied here")
            )
            print(_judged(f"{host}_replication_lag_p99_us", lag99 * 1e6, "us"))
    ok_book = book_a == book_b == expected
    print(
        f"book_net: {book_a:g} on host_a, {book_b:g} on host_b, {expected:g} from the agents' own counts"
        f" ({'consistent' if ok_book else 'INCONSISTENT'})"
    )
    print(f"final_positions_replicated: {finals}/{len(rows)}")
    print(f"cluster_proposals_decided: {decided}/{len(proposed)}")
    print(f"total_s: {time.perf_counter() - steps.t0:.1f}")
    print(f"kept: {', '.join(hosts.values())}" if keep else "cleaned: yes")
    return 0 if ok_book and finals == len(rows) else 1
