"""ReasoningBank report: track_trajectory throughput, distillation time for N trajectories, and
retrieve p50/p99 over P patterns.

    nt-memory bench reasoningbank [--quick] [--trajectories 10000] [--patterns 100000] [--json PATH]
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import time

import numpy as np
from rich.progress import Progress

from nt_memory import CacheConfig, MemoryConfig, MemorySystem, Pattern, Trajectory
from nt_memory.benchmarks import finish, suite_parser
from nt_memory.reasoningbank.bank import NAMESPACE
from nt_memory.tiers.l3 import pack_kv
from nt_memory.timing import percentiles

DIM = 64


def run(n_traj: int, n_patterns: int) -> dict:
    root = tempfile.mkdtemp(prefix="nt-memory-rb-")
    mem = MemorySystem.open(
        MemoryConfig(
            name=f"rb{secrets.token_hex(3)}",
            storage_path=root,
            embedding_dim=DIM,
            cache_config=CacheConfig(max_entries=max(1024, n_patterns + 1000)),
            max_memory_bytes=1 << 40,
        )
    )
    r: dict = {"trajectories": n_traj, "patterns": n_patterns, "dim": DIM}
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(50, DIM)) * 3
    try:
        with Progress(transient=True) as progress:
            task = progress.add_task("track_trajectory", total=n_traj)
            t0 = time.perf_counter()
            for i in range(n_traj):
                t = Trajectory(f"agent_{i % 8}")
                t.add_observation({"price": 100.0}, embedding=centers[i % 50] + rng.normal(size=DIM) * 0.3)
                t.add_action("buy" if i % 3 else "sell", {"quantity": 1}, predicted_outcome=101.0)
                t.add_outcome(100.0 + rng.normal())
                mem.bank.track(t.complete())
                if i % 500 == 0:
                    progress.update(task, completed=i)
            r["track_per_s"] = n_traj / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            r["distilled_patterns"] = len(mem.bank.distill())
            r["distill_s"] = time.perf_counter() - t0
            # Bulk-load P synthetic patterns (stored exactly as the bank stores them).
            task = progress.add_task("loading patterns", total=n_patterns)
            now = time.time_ns()
            batch = []
            for i in range(n_patterns):
                v = centers[i % 50] + rng.normal(size=DIM)
                v = (v / np.linalg.norm(v)).astype(np.float32)
                p = Pattern(
                    id=f"p{i}",
                    centroid=v.tolist(),
                    action="buy" if i % 2 else "sell",
                    successes=i % 5,
                    failures=2,
                    created_ns=now,
                    updated_ns=now,
                )
                batch.append(("patterns", p.id.encode(), pack_kv(json.dumps(p.to_json()).encode(), 0, True)))
                mem.put(NAMESPACE, p.id, {"action": p.action}, embedding=v)
                if len(batch) == 5000:
                    mem.store.write(batch)
                    batch = []
                    progress.update(task, completed=i)
            mem.store.write(batch)
            mem.l2.sync()
        lat = []
        for i in range(500):
            q = centers[i % 50] + rng.normal(size=DIM)
            t0 = time.perf_counter_ns()
            mem.bank.retrieve(q, top_k=3)
            lat.append(time.perf_counter_ns() - t0)
        r["retrieve"] = percentiles(lat, "us")
    finally:
        mem.close()
        mem.unlink()
        shutil.rmtree(root, ignore_errors=True)
    return r


def main(argv: list[str] | None = None) -> int:
    ap = suite_parser("reasoningbank", __doc__, "1,000 trajectories, 10k patterns")
    ap.add_argument("--trajectories", type=int, default=10_000)
    ap.add_argument("--patterns", type=int, default=100_000)
    args = ap.parse_args(argv)
    r = run(1_000, 10_000) if args.quick else run(args.trajectories, args.patterns)
    text = (
        f"track_trajectory: {r['track_per_s']:,.0f}/s over {r['trajectories']:,} trajectories\n"
        f"distill {r['trajectories']:,} trajectories: {r['distill_s']:.1f}s -> {r['distilled_patterns']} patterns\n"
        f"retrieve top-3 over {r['patterns']:,} patterns: p50 {r['retrieve']['p50']:.0f} us, "
        f"p99 {r['retrieve']['p99']:.0f} us"
    )
    return finish(r, text, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
