"""``nt-memory top NAME``: a live view of a running system, read as an observer (no member slot).

One frame is a title line, then L1 (operations per second from counter deltas, hit ratio,
evictions), the journal (backlog, flusher), and tables of members, topics (messages published,
receivers asleep), lock holders and open proposals. The frame fits the terminal: every line is cut
to its width, and a table with more rows than the height leaves room for says how many it left
out. ``q`` or Ctrl-C quits; ``--once`` prints one frame (``--json``: the same snapshot as JSON).

Each subscription writes how far it has read into the subscriber board (shm/coord_layout.py)
after every receive, so the subscribers table shows each one's lag (messages published to its
topic that it has not taken yet), received and dropped counts, the furthest behind first.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import sys
import time

from nt_memory.memory import observe
from nt_memory.shm.members import owner_slot

MIN_ROWS = 1  # a table shown at all shows at least its header and this many rows


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

    def read(self) -> dict:
        """One snapshot: plain numbers and strings (what ``--json`` prints and a frame shows)."""
        now_ns = time.time_ns()
        snap: dict = {"system": self.system.name, "time_ns": now_ns, "members": []}
        for m in self.system.members.members():
            snap["members"].append(
                {
                    "slot": m.slot,
                    "pid": m.pid,
                    "label": m.label,
                    "alive": m.alive,
                    "heartbeat_age_s": round((now_ns - m.heartbeat_ns) / 1e9, 3),
                    "l1_hits": m.l1_hits,
                    "l1_misses": m.l1_misses,
                }
            )
        if "l1" in self.parts:
            s = self.parts["l1"].stats()
            snap["l1"] = {k: v for k, v in s.items() if isinstance(v, int | float)} | {"ops_per_s": self.l1_ops(s)}
        if "journal" in self.parts:
            js = self.parts["journal"].stats()
            snap["journal"] = {k: js[k] for k in ("backlog_bytes", "appends", "flusher_pid") if k in js}
        if "topics" in self.parts:
            st = self.parts["topics"].stats()
            snap["topics"] = st["topics"]
            snap["subscribers"] = st["subscribers"]
        if "locks" in self.parts:
            st = self.parts["locks"].stats()
            snap["locks"] = {
                "held": st["held"],
                "named": st["named"],
                "holders": [
                    {
                        "name": h["name"],
                        "holder_slot": owner_slot(h["holder"]) if h["holder"] else None,
                        "fence": h["fence"],
                        "lease_left_s": round((h["lease_ns"] - now_ns) / 1e9, 3) if h["lease_ns"] else None,
                    }
                    for h in st["holders"]
                ],
            }
        if "consensus" in self.parts:
            c = self.parts["consensus"].stats()
            snap["consensus"] = {"voters": c["voters"], "total_weight": c["total_weight"], "open": c["open"]}
        return snap

    def close(self) -> None:
        self._observing.close()


def _table(title: str, header: str, rows: list[str], room: int) -> list[str]:
    """``title``, ``header`` and as many ``rows`` as fit in ``room`` lines (a last line saying how
    many were left out when they do not all fit)."""
    if len(rows) + 2 <= room:
        return [title, header, *rows]
    shown = max(0, room - 3)
    return [title, header, *rows[:shown], f"  ... {len(rows) - shown} more (nt-memory inspect / --json)"]


def _share(tables: list[tuple[str, str, list[str]]], left: int) -> list[int]:
    """Lines for each table out of ``left``. In order, each gets its title, header, first row and
    a "more" line if it has more rows (or nothing, when that does not fit); then the lines left go
    one at a time, round the tables, to those with rows still unshown."""
    room = [0] * len(tables)
    for i, (_, _, rows) in enumerate(tables):
        want = min(2 + len(rows), 3 + MIN_ROWS)
        if left >= want:
            room[i] = want
            left -= want
    while left > 0:
        grew = False
        for i, (_, _, rows) in enumerate(tables):
            if left > 0 and room[i] and room[i] < 2 + len(rows):
                room[i] += 1
                left -= 1
                grew = True
        if not grew:
            break
    return room


def frame(snap: dict, width: int, height: int, interactive: bool = False) -> str:
    """The text of one frame: at most ``height`` lines of at most ``width`` characters."""
    lines = [
        f"nt-memory top: {snap['system']}  {time.strftime('%H:%M:%S')}  "
        f"{sum(m['alive'] for m in snap['members'])} live members" + ("  (q quits)" if interactive else "")
    ]
    if "l1" in snap:
        s = snap["l1"]
        lines.append(
            f"L1 {s['entries']:,}/{s['max_entries']:,} entries  {s['ops_per_s']:,.0f} ops/s  "
            f"hit ratio {s['hit_ratio']:.3f}"
        )
        lines.append(
            f"   evictions {s['evictions']:,}  expired {s['expirations']:,}  "
            f"arena {s['arena_used_bytes'] / 2**20:.1f}/{s['arena_bytes'] / 2**20:.0f} MiB"
        )
    if "journal" in snap:
        j = snap["journal"]
        flusher = f"pid {j['flusher_pid']}" if j.get("flusher_pid") else "none"
        lines.append(f"journal backlog {j['backlog_bytes']:,} B  appends {j['appends']:,}  flusher {flusher}")
    tables = []
    members = [
        f"{m['slot']:>4} {m['pid']:>7} {m['label'][:18]:<18} {'alive' if m['alive'] else 'DEAD':<5} "
        f"{m['heartbeat_age_s']:>6.1f} {m['l1_hits']:>12,} {m['l1_misses']:>10,}"
        for m in snap["members"]
    ]
    tables.append(
        (
            "members",
            f"{'slot':>4} {'pid':>7} {'label':<18} {'state':<5} {'beat s':>6} {'l1 hits':>12} {'l1 misses':>10}",
            members,
        )
    )
    if "topics" in snap:
        rows = [
            f"{name[:30]:<30} {t['messages']:>12,} {t['sleeping']:>8} {t['ring_bytes']:>12,}"
            for name, t in snap["topics"].items()
        ]
        tables.append(("topics", f"{'topic':<30} {'messages':>12} {'asleep':>8} {'ring bytes':>12}", rows))
        subs = sorted(snap["subscribers"], key=lambda x: -(x["lag"] or 0))  # the furthest behind first
        rows = [
            f"{x['topic'][:30]:<30} {x['pid']:>7} {x['lag'] if x['lag'] is not None else '?':>10} "
            f"{x['received']:>12,} {x['dropped']:>9,}"
            for x in subs
        ]
        tables.append(
            (
                f"subscribers ({len(subs)}; lag: published, not yet received)",
                f"{'topic':<30} {'pid':>7} {'lag':>10} {'received':>12} {'dropped':>9}",
                rows,
            )
        )
    if "locks" in snap:
        lk = snap["locks"]
        rows = [
            f"{h['name'][:30]:<30} {h['holder_slot'] if h['holder_slot'] is not None else 'free':>6} {h['fence']:>10} "
            f"{h['lease_left_s'] if h['lease_left_s'] is not None else '-':>8}"
            for h in lk["holders"]
        ]
        tables.append(
            (
                f"locks ({lk['held']} held of {lk['named']} named)",
                f"{'name':<30} {'holder':>6} {'fence':>10} {'lease s':>8}",
                rows,
            )
        )
    if "consensus" in snap:
        c = snap["consensus"]
        rows = [
            f"{p['id']:>6} {p['approve']:>8g} {p['reject']:>8g} {p['quorum']:>7g} {p['votes']:>6}" for p in c["open"]
        ]
        tables.append(
            (
                f"open proposals ({len(c['open'])}; voters {c['voters']}, total weight {c['total_weight']:g})",
                f"{'id':>6} {'approve':>8} {'reject':>8} {'quorum':>7} {'votes':>6}",
                rows,
            )
        )
    room = _share(tables, height - len(lines))
    if not all(room):  # a line for what was left out
        room = _share(tables, height - len(lines) - 1)
    for (title, header, rows), r in zip(tables, room, strict=True):
        if r:
            lines += _table(title, header, rows, r)
    hidden = [
        f"{title.split(' (')[0]} ({len(rows)} rows)" for (title, _, rows), r in zip(tables, room, strict=True) if not r
    ]
    if hidden:
        lines.append("no room for: " + ", ".join(hidden))
    return "\n".join(line[:width] for line in lines[:height])


def _size() -> tuple[int, int]:
    size = shutil.get_terminal_size((80, 24))
    return size.columns, size.lines


@contextlib.contextmanager
def _keys():
    """stdin in cbreak mode (a key arrives without Enter) while a terminal is attached."""
    if not sys.stdin.isatty():
        yield False
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run(name: str, interval: float = 1.0, once: bool = False, as_json: bool = False) -> int:
    snap = Snapshot(name)
    try:
        if once:
            snap.read()  # the first read primes the rate counters
            time.sleep(min(interval, 0.5))
            data = snap.read()
            if as_json:
                import json

                json.dump(data, sys.stdout, indent=2)
                sys.stdout.write("\n")
            else:
                width, height = _size()
                print(frame(data, width, height))
            return 0
        snap.read()
        with _keys() as keys:
            while True:
                width, height = _size()
                text = frame(snap.read(), width, height - 1, interactive=keys)
                sys.stdout.write("\x1b[H\x1b[2J" + text + "\n")  # home, clear, the frame
                sys.stdout.flush()
                if keys:
                    ready, _, _ = select.select([sys.stdin], [], [], interval)
                    if ready and os.read(sys.stdin.fileno(), 16).lower().startswith(b"q"):
                        return 0
                else:
                    time.sleep(interval)
    except KeyboardInterrupt:
        return 0
    finally:
        snap.close()
