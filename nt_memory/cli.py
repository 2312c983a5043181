"""The ``nt-memory`` command: ls, inspect, gc, demo."""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from nt_memory.errors import NtMemoryError, SegmentNotFound


def _when(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9).strftime("%Y-%m-%d %H:%M:%S") if ns else "-"


def cmd_ls(args) -> int:
    from nt_memory.shm.system import describe, list_systems

    names = list_systems()
    if not names:
        print("no nt-memory systems on this host")
        return 0
    for name in names:
        try:
            info = describe(name)
        except SegmentNotFound:
            continue
        if not info.ok:
            print(f"{name}  BROKEN: {info.error}")
            continue
        size = sum(info.parts.values())
        live = info.live_members
        pids = ", ".join(f"{m.pid}({m.label})" for m in live) or "-"
        dead = len(info.members) - len(live)
        extra = f", {dead} dead" if dead else ""
        print(f"{name}  {size / 2**20:.1f} MiB  members: {len(live)} live{extra}  pids: {pids}")
    return 0


def cmd_inspect(args) -> int:
    from nt_memory.shm.system import System, describe
    from nt_memory.tiers.l1 import HotCache

    info = describe(args.name)
    if not info.ok:
        print(f"nt-memory: system {args.name!r} is damaged: {info.error}", file=sys.stderr)
        return 1
    print(f"system: {info.name}")
    print(f"created: {_when(info.created_ns)} by pid {info.creator_pid}")
    for part, size in info.parts.items():
        print(f"segment: ntm.{info.name}.{part}  {size:,} bytes")
    for m in info.members:
        state = "alive" if m.alive else "DEAD"
        print(
            f"member: slot={m.slot} pid={m.pid} label={m.label} {state} attached={_when(m.attached_ns)} "
            f"heartbeat={_when(m.heartbeat_ns)} l1_hits={m.l1_hits} l1_misses={m.l1_misses}"
        )
    if "l1" in info.parts:
        system = System.attach(args.name, timeout=0.5, register=False)
        cache = HotCache(system)
        try:
            s = cache.stats()
        finally:
            cache.close()
        fill = s["entries"] / s["max_entries"] if s["max_entries"] else 0
        print(f"l1_entries: {s['entries']} / {s['max_entries']} ({fill:.1%})  slots: {s['slots']}")
        print(f"l1_arena: {s['arena_used_bytes']:,} / {s['arena_bytes']:,} bytes used")
        for k in ("hits", "misses", "evictions", "expirations", "inserts", "updates", "deletes", "tombstones"):
            print(f"l1_{k}: {s[k]}")
        print(f"l1_hit_ratio: {s['hit_ratio']:.3f}  rehashes: {s['rehashes']}  repairs: {s['repairs']}")
    if "journal" in info.parts:
        from nt_memory.kernels.ring import RING_APPENDS_IDX, RING_CONSUMER_LOCK_IDX, RING_HEAD_IDX, RING_TAIL_IDX
        from nt_memory.shm.journal_layout import JournalLayout

        system = System.attach(args.name, timeout=0.5, register=False)
        try:
            seg = system.parts["journal"]
            ring = seg.region(JournalLayout.from_segment(seg).ring_offset, 64 * 8, "int64")
            head, tail = int(ring[RING_HEAD_IDX]), int(ring[RING_TAIL_IDX])
            flusher = int(ring[RING_CONSUMER_LOCK_IDX])
            print(f"journal_backlog_bytes: {tail - head}  appends: {int(ring[RING_APPENDS_IDX])}")
            print(f"journal_flusher: {'member slot ' + str((flusher & 0xFFFF) - 1) if flusher else 'none'}")
            print(f"storage_path: {info.config.get('storage_path', '-')}")
        finally:
            system.close()
    return 0


def cmd_gc(args) -> int:
    from nt_memory.shm.system import gc

    def skipped(name: str, why: str) -> None:
        print(f"kept: {name}  ({why})")

    removed = gc(args.names, dry_run=args.dry_run, force=args.force, on_skip=skipped)
    verb = "would remove" if args.dry_run else "removed"
    for name in removed:
        print(f"{verb}: {name}")
    if not removed:
        print("nothing to remove")
    return 0


def cmd_reindex(args) -> int:
    """Refill the embedding log from L3 (after a reboot) and build this machine's saved index."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from nt_memory import MemoryConfig, MemorySystem
    from nt_memory.shm.system import System

    path = args.path
    dim = args.dim
    try:
        system = System.attach(args.name, timeout=2.0, register=False)
        try:
            path = path or system.config.get("storage_path")
            dim = dim or system.config.get("embedding_dim")
        finally:
            system.close()
    except SegmentNotFound:
        if not path:
            print(
                f"nt-memory: system {args.name!r} is not in shared memory: pass --path (its storage_path)",
                file=sys.stderr,
            )
            return 2
    config = MemoryConfig(name=args.name, storage_path=path, embedding_dim=dim or 128)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns) as progress:
        task = progress.add_task("refilling the embedding log from L3", total=None)

        def step(done, total):
            progress.update(task, completed=done, total=total)

        mem = MemorySystem.open(config, label="reindex")
        try:
            n = mem.reindex(progress=step)
            saved = mem.l2.save()
        finally:
            mem.close()
    print(f"reindexed: {n} embeddings{'; index saved' if saved else ''}")
    return 0


BENCH_SUITES: dict[str, str | None] = {
    "seed": None,
    "hot": "nt_memory.benchmarks.hot_paths",
    "scaling": "nt_memory.benchmarks.scaling",
    "busy": "nt_memory.benchmarks.busy",
    "instructions": "nt_memory.benchmarks.instructions",
    "vectors": "nt_memory.benchmarks.vectors",
}


def cmd_bench(args) -> int:
    if args.suite == "seed":
        from nt_memory.bench import main as bench_main

        return bench_main(quick=args.quick, json_path=args.json, plot_path=args.plot)
    import importlib

    argv = ["--quick"] if args.quick else []
    argv += ["--json", args.json] if args.json else []
    argv += ["--plot", args.plot] if args.plot and args.suite == "scaling" else []
    argv += ["--full"] if args.full and args.suite == "vectors" else []
    return importlib.import_module(str(BENCH_SUITES[args.suite])).main(argv)


def cmd_top(args) -> int:
    from nt_memory.top import run

    return run(args.name, interval=args.interval, once=args.once)


def cmd_demo(args) -> int:
    from nt_memory.demo import run

    return run(agents=args.agents, seconds=args.seconds, name=args.name, keep=args.keep, path=args.path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nt-memory", description="Shared-memory memory engine for co-located agents.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("ls", help="list systems on this host and their members").set_defaults(func=cmd_ls)
    sp = sub.add_parser("inspect", help="sizes, fill and counters of one system")
    sp.add_argument("name")
    sp.set_defaults(func=cmd_inspect)
    sp = sub.add_parser("gc", help="remove systems that no live process is attached to")
    sp.add_argument("names", nargs="*", help="only systems whose names match these shell patterns")
    sp.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    sp.add_argument("--force", action="store_true", help="also remove systems with unflushed journal records")
    sp.set_defaults(func=cmd_gc)
    sp = sub.add_parser("bench", help="measure the seed's performance targets on this machine")
    sp.add_argument(
        "suite",
        nargs="?",
        default="seed",
        choices=list(BENCH_SUITES),
        help="seed: the seed's targets (default); hot: get/put/locks/wake-ups beside LMDB, UltraDict, dict, "
        "mp.Lock, MessageQueue; scaling: cost by keys, subscribers, contenders; busy: more busy processes "
        "than cores; instructions: instructions per call under callgrind; vectors: footprint and search of "
        "100k observations (--full: 1M)",
    )
    sp.add_argument("--quick", action="store_true", help="smaller sizes: about half a minute")
    sp.add_argument("--full", action="store_true", help="vectors: 1M observations (about 15 minutes)")
    sp.add_argument("--json", default=None, metavar="PATH", help="save the results as JSON")
    sp.add_argument("--plot", default=None, metavar="PATH", help="save latency histograms as PNG (needs matplotlib)")
    sp.set_defaults(func=cmd_bench)
    sp = sub.add_parser("top", help="a live view of a running system")
    sp.add_argument("name")
    sp.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    sp.add_argument("--once", action="store_true", help="print one frame and exit (non-interactive)")
    sp.set_defaults(func=cmd_top)
    sp = sub.add_parser("reindex", help="rebuild the embedding log and index from L3 (after a reboot)")
    sp.add_argument("name")
    sp.add_argument("--path", default=None, help="storage_path, if the system is not in shared memory")
    sp.add_argument("--dim", type=int, default=None, help="embedding_dim, if the system is not in shared memory")
    sp.set_defaults(func=cmd_reindex)
    sp = sub.add_parser("demo", help="spawn agent processes that share one system by name")
    sp.add_argument("--agents", type=int, default=4, help="agent processes (default 4)")
    sp.add_argument("--seconds", type=float, default=10.0, help="how long the market runs (default 10)")
    sp.add_argument("--name", default=None, help="system name (default: random)")
    sp.add_argument("--keep", action="store_true", help="leave the system (and its data) for inspect")
    sp.add_argument("--path", default=None, help="storage_path for LMDB (default: a temporary directory)")
    sp.set_defaults(func=cmd_demo)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SegmentNotFound as exc:
        print(f"nt-memory: {exc}", file=sys.stderr)
        return 2
    except NtMemoryError as exc:
        print(f"nt-memory: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
