"""How each hot path's cost grows with its work, beside the same peer at the same size.

    nt-memory bench scaling [--quick] [--json PATH] [--plot PATH]
    python -m bench.scaling ...              # the same, from a checkout

- ``get`` of a 64-byte value at 10k, 100k, 1M and 10M keys (``--quick``: 10k and 100k): p50/p99 of
  ``HotCache.get`` timed in a second process that attached by name, beside ``dict.get`` and LMDB's get
  with a reused read transaction holding the same keys, random order, one ``perf_counter_ns`` pair per
  call;
- publish -> recv with 1, 4 and 16 sleeping subscribers, a message every 200 us: p50, p99 and the worst
  subscriber's p99, and the publisher's rate unpaced, beside one ``posix_ipc.MessageQueue`` per
  subscriber (what fan-out costs with the OS queue);
- locks with 2, 4 and 8 contending processes: acquisitions per second with exclusion checked, beside
  ``multiprocessing.Lock``.

``--plot`` draws the three as log-log panels (needs matplotlib: ``pip install 'nt-memory[bench]'``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile

import lmdb
import numpy as np

from nt_memory.benchmarks import finish, suite_parser
from nt_memory.benchmarks.hot_paths import CTX, VALUE, _config, _contend, _pubsub
from nt_memory.timing import percentiles, time_calls

KEYS = (10_000, 100_000, 1_000_000, 10_000_000)
SUBSCRIBERS = (1, 4, 16)
CONTENDERS = (2, 4, 8)


def _get_reader(name: str, lmdb_path: str, nkeys: int, calls: int, out) -> None:
    from nt_memory.tiers.l1 import HotCache

    cache = HotCache.attach(name, label="bench-scaling-reader")
    try:
        order = np.random.default_rng(5).integers(0, nkeys, calls)
        keys = [("b", f"key{i}") for i in order]
        time_calls(cache.get, keys[:20_000])
        r = {"hotcache_get": percentiles(time_calls(cache.get, keys))}
        d = {f"key{i}": VALUE for i in range(nkeys)}
        r["dict_get"] = percentiles(time_calls(d.get, [(k,) for _, k in keys]))
        del d
        env = lmdb.open(lmdb_path, readonly=True, lock=False)
        with env.begin() as txn:
            r["lmdb_get"] = percentiles(time_calls(txn.get, [(f"b\0{k}".encode(),) for _, k in keys]))
        env.close()
    finally:
        cache.close()
    out.put(r)


def get_by_keys(nkeys: int, calls: int) -> dict:
    from nt_memory.tiers.l1 import HotCache

    name = f"bsc{secrets.token_hex(3)}"
    path = tempfile.mkdtemp(prefix="nt-memory-bench-")
    cache = HotCache.create(name, max_entries=nkeys + nkeys // 4 + 1024, ttl=None)
    try:
        put = cache.put
        for i in range(nkeys):
            put("b", f"key{i}", VALUE)
        lmdb_path = os.path.join(path, "peer")
        env = lmdb.open(lmdb_path, map_size=1 << 34, sync=False, metasync=False, writemap=True)
        with env.begin(write=True) as txn:
            for i in range(nkeys):
                txn.put(f"b\0key{i}".encode(), VALUE)
        env.close()
        out = CTX.Queue()
        p = CTX.Process(target=_get_reader, args=(name, lmdb_path, nkeys, calls, out))
        p.start()
        r = out.get(timeout=3600)
        p.join(60)
    finally:
        cache.close()
        cache.unlink()
        shutil.rmtree(path, ignore_errors=True)
    r["keys"] = nkeys
    return r


def run(quick: bool) -> dict:
    from nt_memory import MemorySystem

    keys = KEYS[:2] if quick else KEYS
    calls = 50_000 if quick else 200_000
    r: dict = {"get": [get_by_keys(n, calls) for n in keys]}
    name = f"bsp{secrets.token_hex(3)}"
    path = tempfile.mkdtemp(prefix="nt-memory-bench-")
    mem = MemorySystem.open(_config(name, path, 1024), label="bench-scaling")
    try:
        messages = 1000 if quick else 4000
        r["pubsub"] = []
        for subs in SUBSCRIBERS:
            row: dict = {"subscribers": subs}
            for kind, label in (("sleep", "ours"), ("mq", "mq")):
                paced = _pubsub(name, path, 1024, kind, messages, 200, subscribers=subs)
                flat_out = _pubsub(name, path, 1024, kind, messages * 5, 0, subscribers=subs)
                row[label] = {
                    "p50_us": paced["p50"],
                    "p99_us": paced["p99"],
                    "worst_subscriber_p99_us": paced["worst_subscriber_p99_us"],
                    "dropped_paced": paced["dropped"],
                    "publish_per_s": flat_out["publish_per_s"],
                    "dropped_unpaced": flat_out["dropped"],
                }
            r["pubsub"].append(row)
        seconds = 1.0 if quick else 2.0
        r["locks"] = [
            {
                "procs": n,
                "ours": _contend(name, path, 1024, "ours", seconds, procs=n),
                "mp": _contend(name, path, 1024, "mp", seconds, procs=n),
            }
            for n in CONTENDERS
        ]
    finally:
        mem.close()
        mem.unlink()
        shutil.rmtree(path, ignore_errors=True)
    return r


def report(r: dict) -> str:
    lines = ["get of a 64 B value by table size (ns, second process, random keys)"]
    lines.append(
        f"{'keys':>11} {'HotCache p50/p99':>18} {'dict.get p50/p99':>18} {'LMDB p50/p99':>18} "
        f"{'vs dict p50/p99':>16} {'vs LMDB p50':>12}"
    )
    for g in r["get"]:
        a, d, m = g["hotcache_get"], g["dict_get"], g["lmdb_get"]
        lines.append(
            f"{g['keys']:>11,} {a['p50']:8.0f} /{a['p99']:8.0f} {d['p50']:8.0f} /{d['p99']:8.0f} "
            f"{m['p50']:8.0f} /{m['p99']:8.0f} {a['p50'] / d['p50']:7.2f} /{a['p99'] / d['p99']:6.2f} "
            f"{a['p50'] / m['p50']:12.2f}"
        )
    lines.append("publish -> recv, sleeping subscribers, a message every 200 us (us); publisher rate unpaced")
    lines.append(
        f"{'subscribers':>11} {'ours p50/p99/worst':>22} {'MQ each p50/p99/worst':>24} {'ours pub/s':>12} "
        f"{'MQ pub/s':>10} {'p99 ratio':>9} {'dropped unpaced':>16}"
    )
    for row in r["pubsub"]:
        o, q = row["ours"], row["mq"]
        lines.append(
            f"{row['subscribers']:>11} {o['p50_us']:6.1f} /{o['p99_us']:6.1f} /{o['worst_subscriber_p99_us']:6.1f} "
            f"{q['p50_us']:7.1f} /{q['p99_us']:7.1f} /{q['worst_subscriber_p99_us']:7.1f} "
            f"{o['publish_per_s']:12,.0f} {q['publish_per_s']:10,.0f} {o['p99_us'] / q['p99_us']:9.2f} "
            f"{o['dropped_unpaced']:16,}"
        )
    lines.append("locks, processes contending (acquisitions per second, exclusion checked)")
    lines.append(f"{'processes':>11} {'ours':>12} {'mp.Lock':>12} {'ratio':>7}  exclusion held")
    for row in r["locks"]:
        o, m = row["ours"], row["mp"]
        lines.append(
            f"{row['procs']:>11} {o['acquisitions_per_s']:12,.0f} {m['acquisitions_per_s']:12,.0f} "
            f"{o['acquisitions_per_s'] / m['acquisitions_per_s']:7.2f}  {o['exclusion_held']} / {m['exclusion_held']}"
        )
    return "\n".join(lines)


def plot(r: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    ax = axes[0]
    ks = [g["keys"] for g in r["get"]]
    for key, label, color in (
        ("hotcache_get", "HotCache.get", "C0"),
        ("dict_get", "dict.get", "C2"),
        ("lmdb_get", "LMDB get", "C1"),
    ):
        ax.plot(ks, [g[key]["p50"] for g in r["get"]], "o-", color=color, label=f"{label} p50")
        ax.plot(ks, [g[key]["p99"] for g in r["get"]], "s--", color=color, label=f"{label} p99")
    ax.set(xscale="log", yscale="log", xlabel="keys in the table", ylabel="ns per get", title="get, 64 B value")
    ax.legend(fontsize=8)
    ax = axes[1]
    ss = [row["subscribers"] for row in r["pubsub"]]
    for key, label, color in (("ours", "nt-memory recv()", "C0"), ("mq", "MessageQueue per subscriber", "C1")):
        ax.plot(ss, [row[key]["p50"] for row in r["pubsub"]], "o-", color=color, label=f"{label} p50")
        ax.plot(ss, [row[key]["p99"] for row in r["pubsub"]], "s--", color=color, label=f"{label} p99")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="subscribers",
        ylabel="one-way latency, us",
        title="publish -> recv, every 200 us",
    )
    ax.legend(fontsize=8)
    ax = axes[2]
    ps = [row["procs"] for row in r["locks"]]
    ax.plot(ps, [row["ours"]["acquisitions_per_s"] for row in r["locks"]], "o-", color="C0", label="nt-memory lock")
    ax.plot(ps, [row["mp"]["acquisitions_per_s"] for row in r["locks"]], "o-", color="C1", label="multiprocessing.Lock")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="contending processes",
        ylabel="acquisitions per second",
        title="contended lock",
    )
    ax.legend(fontsize=8)
    fig.suptitle(f"nt-memory scaling on {os.cpu_count()} cores, peers measured in the same run")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = suite_parser("scaling", __doc__, "10k and 100k keys, fewer messages, 1 s per lock row")
    ap.add_argument("--plot", default=None, metavar="PATH", help="log-log PNG of the three tables")
    args = ap.parse_args(argv)
    r = run(args.quick)
    status = finish(r, report(r), args.json)
    if args.plot:
        plot(r, args.plot)
        print(f"plot: {args.plot}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
