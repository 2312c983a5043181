"""``nt-memory top NAME``: a live view of a running system, read as an observer (no member slot).

Shows members, L1 operations per second (from counter deltas), hit ratio, evictions, the journal's
backlog and flusher, topics (messages published, subscribers asleep), lock holders and open
proposals. Subscriber cursors are private to each subscriber, so per-subscriber lag is not visible
from outside; ``sub.dropped`` reports it in the subscriber's own process.
"""

from __future__ import annotations

import contextlib
import time

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from nt_memory.memory import observe
from nt_memory.shm.members import owner_slot


class Snapshot:
    def __init__(self, name: str):
        self._observing = contextlib.ExitStack()
        self.system, self.parts = self._observing.enter_context(observe(name, timeout=1.0))
        self.prev: tuple[float, int] | None = None

    def l1_ops(self, s: dict) -> float:
        total = s["hits"] + s["misses"] + s["inserts"] + s["updates"] + s["deletes"]
        now = time.monotonic()
        rate = 0.0
        if self.prev is not None and now > self.prev[0]:
            rate = (total - self.prev[1]) / (now - self.prev[0])
        self.prev = (now, total)
        return rate

    def render(self) -> Group:
        sysm = self.system
        members = Table(title=f"system {sysm.name}: members", expand=True)
        for col in ("slot", "pid", "label", "state", "heartbeat age s", "l1 hits", "l1 misses"):
            members.add_column(col)
        now = time.time_ns()
        for m in sysm.members.members():
            members.add_row(
                str(m.slot),
                str(m.pid),
                m.label,
                "alive" if m.alive else "DEAD",
                f"{(now - m.heartbeat_ns) / 1e9:.1f}",
                str(m.l1_hits),
                str(m.l1_misses),
            )
        parts = [members]
        if "l1" in self.parts:
            s = self.parts["l1"].stats()
            t = Table(title="L1", expand=True)
            for col in (
                "entries",
                "ops/s",
                "hit ratio",
                "evictions",
                "expirations",
                "arena used",
                "rehashes",
                "repairs",
            ):
                t.add_column(col)
            t.add_row(
                f"{s['entries']:,}/{s['max_entries']:,}",
                f"{self.l1_ops(s):,.0f}",
                f"{s['hit_ratio']:.3f}",
                str(s["evictions"]),
                str(s["expirations"]),
                f"{s['arena_used_bytes'] / 2**20:.1f} MiB",
                str(s["rehashes"]),
                str(s["repairs"]),
            )
            parts.append(t)
        if "journal" in self.parts:
            js = self.parts["journal"].stats()
            j = Table(title="journal", expand=True)
            j.add_column("backlog bytes")
            j.add_column("appends")
            j.add_column("flusher pid")
            j.add_row(f"{js['backlog_bytes']:,}", f"{js['appends']:,}", str(js["flusher_pid"] or "none"))
            parts.append(j)
        if "topics" in self.parts:
            parts.append(self._topics(self.parts["topics"].stats()))
        if "locks" in self.parts:
            parts.append(self._locks(self.parts["locks"].stats()))
        if "consensus" in self.parts:
            parts.append(self._proposals(self.parts["consensus"].stats()))
        return Group(*parts)

    @staticmethod
    def _topics(st: dict) -> Table:
        t = Table(title="topics", expand=True)
        for col in ("topic", "messages", "subscribers asleep", "ring bytes"):
            t.add_column(col)
        for name, row in st["topics"].items():
            t.add_row(name, f"{row['messages']:,}", str(row["sleeping"]), f"{row['ring_bytes']:,}")
        return t

    @staticmethod
    def _locks(st: dict) -> Table:
        t = Table(title=f"locks ({st['held']} held of {st['named']} named)", expand=True)
        for col in ("name", "holder slot", "fence", "lease left s"):
            t.add_column(col)
        now = time.time_ns()
        for h in st["holders"]:
            lease = f"{(h['lease_ns'] - now) / 1e9:.1f}" if h["lease_ns"] else "-"
            t.add_row(h["name"], str(owner_slot(h["holder"])) if h["holder"] else "free", str(h["fence"]), lease)
        return t

    @staticmethod
    def _proposals(st: dict) -> Table:
        t = Table(title=f"open proposals (voters {st['voters']}, total weight {st['total_weight']:g})", expand=True)
        for col in ("id", "approve", "reject", "quorum", "votes"):
            t.add_column(col)
        for p in st["open"]:
            t.add_row(str(p["id"]), f"{p['approve']:g}", f"{p['reject']:g}", f"{p['quorum']:g}", str(p["votes"]))
        return t

    def close(self) -> None:
        self._observing.close()


def run(name: str, interval: float = 1.0, once: bool = False) -> int:
    snap = Snapshot(name)
    console = Console()
    try:
        if once:
            snap.render()  # first frame primes the rate counters
            time.sleep(min(interval, 0.5))
            console.print(snap.render())
            return 0
        with Live(snap.render(), console=console, refresh_per_second=4, screen=False) as live:
            while True:
                time.sleep(interval)
                live.update(snap.render())
    except KeyboardInterrupt:
        return 0
    finally:
        snap.close()
