"""The ``nt-memory`` command: ls, inspect, verify, gc, bench, top, reindex, demo.

Exit codes: 0 success, 1 an error (a damaged system, a failed check), 2 a usage error or a
system that does not exist, 130 interrupted (Ctrl-C). A closed pipe (``nt-memory inspect X |
head``) ends the command quietly.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import sys

from nt_memory.errors import NtMemoryError, SegmentNotFound

EXIT_CODES = "exit codes: 0 success, 1 error, 2 usage error or no such system, 130 interrupted"


def _print_json(obj: object) -> None:
    """``obj`` as indented JSON on stdout (numpy scalars as numbers, anything else as text)."""

    def plain(o: object) -> object:
        item = getattr(o, "item", None)
        return item() if callable(item) else str(o)

    json.dump(obj, sys.stdout, indent=2, default=plain)
    sys.stdout.write("\n")


def _when(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9).strftime("%Y-%m-%d %H:%M:%S") if ns else "-"


def cmd_ls(args) -> int:
    from nt_memory.shm.system import describe, list_systems

    names = list_systems()
    if not names and not args.json:
        print("no nt-memory systems on this host")
        return 0
    found = []
    for name in names:
        try:
            info = describe(name)
        except SegmentNotFound:
            continue
        if args.json:
            found.append(
                {
                    "name": name,
                    "ok": info.ok,
                    "error": info.error or None,
                    "bytes": sum(info.parts.values()),
                    "members": [dataclasses.asdict(m) for m in info.members],
                }
            )
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
    if args.json:
        _print_json(found)
    return 0


def _print_parts(stats: dict[str, dict]) -> None:
    """The ``key: value`` lines of ``inspect`` for each part's ``stats()``."""
    if "l1" in stats:
        s = stats["l1"]
        fill = s["entries"] / s["max_entries"] if s["max_entries"] else 0
        print(f"l1_entries: {s['entries']} / {s['max_entries']} ({fill:.1%})  slots: {s['slots']}")
        print(f"l1_arena: {s['arena_used_bytes']:,} / {s['arena_bytes']:,} bytes used")
        for k in ("hits", "misses", "evictions", "expirations", "inserts", "updates", "deletes", "tombstones"):
            print(f"l1_{k}: {s[k]}")
        print(f"l1_hit_ratio: {s['hit_ratio']:.3f}  rehashes: {s['rehashes']}  repairs: {s['repairs']}")
    if "journal" in stats:
        j = stats["journal"]
        print(f"journal_backlog_bytes: {j['backlog_bytes']}  appends: {j['appends']}")
        print(f"journal_flusher: {'pid ' + str(j['flusher_pid']) if j['flusher_pid'] else 'none'}")
    if "embed" in stats:
        print(f"embedding_records: {stats['embed']['records']}  chunks: {stats['embed']['chunks']}")
    if "topics" in stats:
        for name, t in stats["topics"]["topics"].items():
            print(f"topic: {name}  messages={t['messages']} sleeping={t['sleeping']} ring_bytes={t['ring_bytes']}")
        for x in stats["topics"]["subscribers"]:
            counts = f"lag={x['lag']} received={x['received']} dropped={x['dropped']}"
            print(f"subscriber: {x['topic']}  pid={x['pid']} {counts}")
    if "locks" in stats:
        print(f"locks: {stats['locks']['held']} held of {stats['locks']['named']} named")
    if "consensus" in stats:
        c = stats["consensus"]
        print(f"consensus: voters={c['voters']} open_proposals={len(c['open'])} next_id={c['next_id']}")


def cmd_inspect(args) -> int:
    from nt_memory.memory import observe
    from nt_memory.shm.system import describe

    info = describe(args.name)
    if not info.ok:
        print(f"nt-memory: system {args.name!r} is damaged: {info.error}", file=sys.stderr)
        return 1
    if args.json:
        with observe(args.name) as (_, parts):
            stats = {name: p.stats() for name, p in parts.items()}
        _print_json(
            {
                "system": info.name,
                "created_ns": info.created_ns,
                "creator_pid": info.creator_pid,
                "segments": {f"ntm.{info.name}.{part}": size for part, size in info.parts.items()},
                "members": [dataclasses.asdict(m) for m in info.members],
                "parts": stats,
                "storage_path": info.config.get("storage_path"),
            }
        )
        return 0
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
    with observe(args.name) as (_, parts):  # each structure's own view and stats (shm/parts.py)
        _print_parts({name: p.stats() for name, p in parts.items()})
    print(f"storage_path: {info.config.get('storage_path', '-')}")
    return 0


def cmd_verify(args) -> int:
    """Check every part's shared words (the Part protocol's ``verify``); 1 if any problem."""
    from nt_memory.memory import observe

    bad = 0
    with observe(args.name) as (_, parts):
        for name, part in parts.items():
            problems = part.verify()
            bad += len(problems)
            print(f"{name}: {'ok' if not problems else str(len(problems)) + ' problem(s)'}")
            for line in problems:
                print(f"  {line}")
    return 1 if bad else 0


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


# Every suite is one module of nt_memory.benchmarks with main(argv); the bench/ scripts of a
# checkout are shortcuts to the same modules.
BENCH_SUITES: dict[str, tuple[str, str]] = {
    "seed": ("seed", "the seed's Performance Targets with a verdict per row (default)"),
    "hot": ("hot_paths", "get/put/arrays/locks/wake-ups beside LMDB, UltraDict, dict, mp.Lock, MessageQueue"),
    "scaling": ("scaling", "cost by keys, subscribers and contenders (--plot)"),
    "busy": ("busy", "reads and locks with more busy processes than cores"),
    "instructions": ("instructions", "instructions per call under valgrind --tool=callgrind"),
    "vectors": ("vectors", "footprint and search of 100k observations (--full: 1M)"),
    "l1": ("l1", "HotCache and @njit lookup tails beside dict, Manager().dict() and LMDB"),
    "memory": ("memory", "MemorySystem write-behind vs sync, cold vs promoted gets, beside LMDB"),
    "coordination": ("coordination", "pub/sub and locks beside multiprocessing and posix_ipc"),
    "search": ("search", "vector search beside raw hnswlib and brute force (--footprint N)"),
    "reasoningbank": ("reasoningbank", "track throughput, distill time, retrieve latency"),
    "cluster": ("cluster", "replication lag and cluster locks through nats-server, beside nats-py KV and Redis"),
    "startup": ("startup", "ls, inspect and top --once start to exit, beside python -c pass and import numba"),
}


def cmd_bench(args, extra: list[str]) -> int:
    """Run one suite; every option after the suite's name is the suite's own (see its --help)."""
    import importlib

    argv = (["--quick"] if args.quick else []) + (["--json", args.json] if args.json else []) + extra
    if args.plot:
        argv += ["--plot", args.plot]
    module = importlib.import_module(f"nt_memory.benchmarks.{BENCH_SUITES[args.suite][0]}")
    return module.main(argv)


def cmd_top(args) -> int:
    from nt_memory.top import run

    return run(args.name, interval=args.interval, once=args.once or args.json, as_json=args.json)


def cmd_demo(args) -> int:
    from nt_memory.demo import run, run_cluster

    if args.cluster:
        return run_cluster(agents=args.agents, seconds=args.seconds, keep=args.keep, path=args.path)
    return run(agents=args.agents, seconds=args.seconds, name=args.name, keep=args.keep, path=args.path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nt-memory", description="Shared-memory memory engine for co-located agents.", epilog=EXIT_CODES
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("ls", help="list systems on this host and their members")
    sp.add_argument("--json", action="store_true", help="print a JSON list instead of text")
    sp.set_defaults(func=cmd_ls)
    sp = sub.add_parser("inspect", help="sizes, fill and counters of one system")
    sp.add_argument("name")
    sp.add_argument("--json", action="store_true", help="print one JSON object instead of key: value lines")
    sp.set_defaults(func=cmd_inspect)
    sp = sub.add_parser("verify", help="check every shared structure of one system (read only)")
    sp.add_argument("name")
    sp.set_defaults(func=cmd_verify)
    sp = sub.add_parser("gc", help="remove systems that no live process is attached to")
    sp.add_argument("names", nargs="*", help="only systems whose names match these shell patterns")
    sp.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    sp.add_argument("--force", action="store_true", help="also remove systems with unflushed journal records")
    sp.set_defaults(func=cmd_gc)
    sp = sub.add_parser(
        "bench",
        help="measure the seed's performance targets (or one suite) on this machine",
        description="Suites:\n"
        + "\n".join(f"  {k:14} {v[1]}" for k, v in BENCH_SUITES.items())
        + "\n\nOptions a suite takes beyond these (--plot, --keys, --n, --full, ...) pass through to it: "
        "nt-memory bench SUITE --help lists them.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sp.add_argument("suite", nargs="?", default="seed", choices=list(BENCH_SUITES), help="default: seed")
    sp.add_argument("--quick", action="store_true", help="smaller sizes: about half a minute")
    sp.add_argument("--json", default=None, metavar="PATH", help="save the results as JSON")
    sp.add_argument("--plot", default=None, metavar="PATH", help="save a PNG (seed: each target beside its peers)")
    sp.set_defaults(func=cmd_bench)
    sp = sub.add_parser("top", help="a live view of a running system (q or Ctrl-C quits)")
    sp.add_argument("name")
    sp.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    sp.add_argument("--once", action="store_true", help="print one frame and exit (non-interactive)")
    sp.add_argument("--json", action="store_true", help="print one snapshot as JSON and exit (implies --once)")
    sp.set_defaults(func=cmd_top)
    sp = sub.add_parser("reindex", help="rebuild the embedding log and index from L3 (after a reboot)")
    sp.add_argument("name")
    sp.add_argument("--path", default=None, help="storage_path, if the system is not in shared memory")
    sp.add_argument("--dim", type=int, default=None, help="embedding_dim, if the system is not in shared memory")
    sp.set_defaults(func=cmd_reindex)
    sp = sub.add_parser("demo", help="spawn agent processes that share one system by name")
    sp.add_argument("--agents", type=int, default=4, help="agent processes (default 4)")
    sp.add_argument("--seconds", type=float, default=6.0, help="how long the market runs (default 6)")
    sp.add_argument("--name", default=None, help="system name (default: random)")
    sp.add_argument("--keep", action="store_true", help="leave the system (and its data) for inspect")
    sp.add_argument("--path", default=None, help="storage_path for LMDB (default: a temporary directory)")
    sp.add_argument(
        "--cluster", action="store_true", help="two hosts (two systems) joined through a private nats-server"
    )
    sp.set_defaults(func=cmd_demo)
    return p


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nt-memory")
    except PackageNotFoundError:  # a checkout that was never installed
        return "unknown (not installed)"


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.func is not cmd_bench:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        code = cmd_bench(args, extra) if args.func is cmd_bench else args.func(args)
        sys.stdout.flush()  # here, where a closed pipe is caught below, not at the interpreter's exit
        return code
    except SegmentNotFound as exc:
        print(f"nt-memory: {exc}", file=sys.stderr)
        return 2
    except NtMemoryError as exc:
        print(f"nt-memory: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("nt-memory: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``| head``): say nothing more, and keep the interpreter's own flush
        # at exit from raising again on the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
