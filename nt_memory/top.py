"""``nt-memory top NAME``: a live view of a running system, read as an observer (no member slot).

Shows members, L1 operations per second (from counter deltas), hit ratio, evictions, the journal's
backlog and flusher, topics (messages published, subscribers asleep), lock holders and open
proposals. Subscriber cursors are private to each subscriber, so per-subscriber lag is not visible
from outside; ``sub.dropped`` reports it in the subscriber's own process.
"""

from __future__ import annotations

import time

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from nt_memory.kernels.ring import (
    RING_CONSUMER_LOCK_IDX,
    RING_HEAD_IDX,
    RING_MSG_COUNT_IDX,
    RING_TAIL_IDX,
    RING_WAITERS_IDX,
)
from nt_memory.shm import coord_layout as C
from nt_memory.shm import layout as L
from nt_memory.shm.journal_layout import JournalLayout
from nt_memory.shm.segment import Segment
from nt_memory.shm.system import System, shm_name
from nt_memory.tiers.l1 import HotCache


class Snapshot:
    def __init__(self, name: str):
        self.system = System.attach(name, timeout=1.0, register=False)
        self.cache = HotCache(self.system) if "l1" in self.system.parts else None
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
        if self.cache is not None:
            s = self.cache.stats()
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
        if "journal" in sysm.parts:
            seg = sysm.parts["journal"]
            ring = seg.region(JournalLayout.from_segment(seg).ring_offset, 64 * 8, np.int64)
            flusher = int(ring[RING_CONSUMER_LOCK_IDX])
            j = Table(title="journal", expand=True)
            j.add_column("backlog bytes")
            j.add_column("flusher member slot")
            j.add_row(
                f"{int(ring[RING_TAIL_IDX]) - int(ring[RING_HEAD_IDX]):,}",
                str((flusher & 0xFFFF) - 1) if flusher else "none",
            )
            parts.append(j)
        if "topics" in sysm.parts:
            parts.append(self._topics())
        if "locks" in sysm.parts:
            parts.append(self._locks())
        if "consensus" in sysm.parts:
            parts.append(self._proposals())
        return Group(*parts)

    def _topics(self) -> Table:
        seg = self.system.parts["topics"]
        lay = C.TopicsLayout.for_count(seg.params[0])
        ctl = seg.region(lay.ctl_offset, C.CTL_WORDS * 8, np.int64)
        entries = seg.region(lay.entries_offset, lay.max_topics * C.TOPIC_ENTRY_WORDS * 8, np.int64)
        t = Table(title="topics", expand=True)
        for col in ("topic", "messages", "subscribers asleep", "ring bytes"):
            t.add_column(col)
        for i in range(int(ctl[C.CTL_COUNT_IDX])):
            e = i * C.TOPIC_ENTRY_WORDS
            n = int(entries[e + C.TOPIC_NAME_LEN_IDX])
            name = entries[e + C.TOPIC_NAME_IDX : e + C.TOPIC_NAME_IDX + 5].tobytes()[:n].decode()
            cap = int(entries[e + C.TOPIC_CAPACITY_IDX])
            try:
                ring_seg = Segment.attach(shm_name(self.system.name, f"topic.{i}"), L.KIND_TOPIC)
            except Exception:  # noqa: BLE001 - a topic being created
                continue
            try:
                ring = ring_seg.region(C.TopicRingLayout.for_capacity(cap).ring_offset, 64 * 8, np.int64)
                t.add_row(name, f"{int(ring[RING_MSG_COUNT_IDX]):,}", str(int(ring[RING_WAITERS_IDX])), f"{cap:,}")
            finally:
                ring_seg.close()
        return t

    def _locks(self) -> Table:
        from nt_memory.coordination.locks import Locks

        t = Table(title="locks", expand=True)
        for col in ("name", "holder slot", "fence", "lease left s"):
            t.add_column(col)
        now = time.time_ns()
        for h in Locks(self.system).holders():
            lease = f"{(h['lease_ns'] - now) / 1e9:.1f}" if h["lease_ns"] else "-"
            t.add_row(h["name"], str((h["holder"] & 0xFFFF) - 1) if h["holder"] else "free", str(h["fence"]), lease)
        return t

    def _proposals(self) -> Table:
        from nt_memory.coordination import consensus as K

        seg = self.system.parts["consensus"]
        words = seg.region(K.consensus_layout().offset("words"), K.WORDS * 8, np.int64)
        f64 = words.view(np.float64)
        t = Table(
            title=f"open proposals (voters {int(words[K.C_NVOTERS])}, total weight {f64[K.C_TOTAL]:g})", expand=True
        )
        for col in ("id", "approve", "reject", "quorum", "votes"):
            t.add_column(col)
        base = K.CTL_WORDS + K.MAX_VOTERS * K.VOTER_WORDS
        for i in range(K.MAX_PROPOSALS):
            b = base + i * K.PROPOSAL_WORDS
            if int(words[b + K.P_ID]) and int(words[b + K.P_STATUS]) == K.ConsensusStatus.PENDING:
                t.add_row(
                    str(int(words[b + K.P_ID])),
                    f"{f64[b + K.P_APPROVE]:g}",
                    f"{f64[b + K.P_REJECT]:g}",
                    f"{f64[b + K.P_QUORUM]:g}",
                    str(int(words[b + K.P_NVOTES])),
                )
        return t

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
        self.system.close()


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
