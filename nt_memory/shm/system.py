"""A *system*: the named set of segments that make one memory system, found through its root.

Root segment (kind ROOT)::

    header                     STATE: INITIALIZING -> READY, published last by the creator
    directory  DIR_CAPACITY x 64 bytes: part name (40 bytes, NUL-padded) | kind | size | flags
    config     8-byte length + UTF-8 JSON: what attachers need to know (sizes, limits, paths)
    members    MAX_MEMBERS x 128 bytes: see members.py

Root params (checksummed with the header): MAX_MEMBERS, DIR_CAPACITY, CONFIG_BYTES, DIR_OFFSET,
CONFIG_OFFSET, MEMBERS_OFFSET, NPARTS, CONFIG_CHECKSUM (xxh3 of the config JSON: every setting an
attacher reads is covered, not only the header's words).

Ownership: every segment of a system belongs to the uid that created it, and an attacher refuses a
segment another uid owns (unless the system is shared with a group it names): a local user who
creates a name first cannot make another user's process store into, or read from, its segments.

Create/attach race: the creator makes the root with O_CREAT|O_EXCL (state INITIALIZING), creates and
initialises every part, then publishes READY with a release store. Attachers wait (bounded) for
READY; a creator that died before publishing is reported (``SystemAbandoned``), and ``gc`` removes
what it left.

Attach and gc exclude each other with ``flock`` on the root's file: a registering attach holds it
shared until its member slot is taken; gc holds it exclusive while it checks that no member is
alive and unlinks. So gc never removes a system a process is joining, nor one with a live member.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import fnmatch
import json
import os
import re
import time
from collections.abc import Callable, Sequence

import numpy as np
import xxhash

from nt_memory.errors import (
    ConfigError,
    CorruptSegment,
    SegmentClosed,
    SegmentError,
    SegmentExists,
    SegmentNotFound,
    SegmentNotOwned,
    SystemAbandoned,
)
from nt_memory.kernels import lazy
from nt_memory.kernels.layout.ring import RING_HDR_BYTES, RING_HEAD_IDX, RING_TAIL_IDX
from nt_memory.shm import layout as L
from nt_memory.shm.forks import forked_error, guard
from nt_memory.shm.journal_layout import JournalLayout
from nt_memory.shm.members import MEMBER_BYTES, MemberInfo, MemberTable, pid_alive
from nt_memory.shm.segment import SHM_DIR, Segment, _unlink_quietly, acquire_load

KW = lazy("words", globals())

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
PREFIX = "ntm."
DIR_CAPACITY = 64
DIR_ENTRY_BYTES = 64
DIR_NAME_BYTES = 40
CONFIG_BYTES = 8192
DEFAULT_MAX_MEMBERS = 256
ORPHAN_GRACE_S = 60

P_MAX_MEMBERS = 0
P_DIR_CAPACITY = 1
P_CONFIG_BYTES = 2
P_DIR_OFFSET = 3
P_CONFIG_OFFSET = 4
P_MEMBERS_OFFSET = 5
P_NPARTS = 6
P_CONFIG_CHECKSUM = 7


def validate_name(name) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(f"name={name!r} is not a valid system name: use 1 to 32 characters from A-Z a-z 0-9 _ -")
    return name


def shm_name(name: str, part: str) -> str:
    return f"/{PREFIX}{name}.{part}"


@dataclasses.dataclass
class PartSpec:
    """A part to create: its name, kind, size, header params, an initialiser for its payload, and
    the settings it records in the system's config (read back by attachers)."""

    part: str
    kind: int
    size: int
    params: Sequence[int] = ()
    init: Callable[[Segment], None] | None = None
    settings: dict = dataclasses.field(default_factory=dict)


def config_checksum(blob: bytes) -> int:
    return xxhash.xxh3_64_intdigest(blob) & 0x7FFF_FFFF_FFFF_FFFF


def _root_layout(max_members: int) -> L.Layout:
    lay = L.Layout()
    lay.add("dir", DIR_CAPACITY * DIR_ENTRY_BYTES)
    lay.add("config", CONFIG_BYTES)
    lay.add("members", max_members * MEMBER_BYTES)
    return lay


class System:
    """An open system: its root, its parts by name, and this handle's member registration."""

    # Class-level defaults: a half-built or forked System can always close() and repr().
    name = "?"
    closed = False
    slot = -1
    owner = 0
    opened_pid = 0
    forked = False
    parts: dict[str, Segment] = {}  # noqa: RUF012  # replaced per instance, never mutated here

    def __init__(
        self,
        name: str,
        root: Segment,
        parts: dict[str, Segment],
        register: bool,
        label: str,
        mode: int = 0o600,
        gid: int | None = None,
    ):
        self.name = name
        self.opened_pid = os.getpid()
        self.root = root
        self.parts = parts
        self.mode = mode
        self.gid = gid
        p = root.params
        self.config = _read_config(root, p[P_CONFIG_OFFSET], p[P_CONFIG_BYTES], p[P_CONFIG_CHECKSUM])
        self.members = MemberTable(
            root.region(p[P_MEMBERS_OFFSET], p[P_MAX_MEMBERS] * MEMBER_BYTES, np.int64),
            root.address + p[P_MEMBERS_OFFSET],
            p[P_MAX_MEMBERS],
        )
        self.shm_names = [root.shm_name] + [s.shm_name for s in parts.values()]
        self.slot = -1
        self.owner = 0
        self._last_beat = 0
        if register:
            self.slot, self.owner = self.members.register(label or _default_label())
            self._last_beat = time.time_ns()
        self.closed = False
        guard(self)

    def _forked(self) -> None:
        """In a forked child: closed, without leaving the member table (the slot is the parent's)."""
        self.forked = True
        self.closed = True

    def check_open(self, what: str) -> None:
        """Raise ``SegmentClosed`` for ``what`` (a structure of this system) once it is closed, or
        in a forked child."""
        if self.closed:
            if self.forked:
                raise forked_error(f"{what} of system {self.name!r}", self.opened_pid)
            raise SegmentClosed(f"{what} of system {self.name!r} is closed")

    # ----------------------------------------------------------------------------- create / attach
    @classmethod
    def create(
        cls,
        name: str,
        parts: Sequence[PartSpec],
        config: dict,
        *,
        mode: int = 0o600,
        max_members: int = DEFAULT_MAX_MEMBERS,
        label: str = "",
        gid: int | None = None,
    ) -> System:
        """Create every segment of a new system and publish it READY. Fails with
        ``SegmentExists`` if the name is taken; on any failure removes what it made. ``gid``: a
        group to share the system with (with a group-readable ``mode``). Each part's ``settings``
        are recorded in the config beside ``config``."""
        validate_name(name)
        if len(parts) > DIR_CAPACITY:
            raise ConfigError(f"{len(parts)} parts exceed the directory's {DIR_CAPACITY}")
        for spec in parts:
            config = {**config, **spec.settings}
        blob = json.dumps(config, sort_keys=True).encode()
        if len(blob) + 8 > CONFIG_BYTES:
            raise ConfigError(f"configuration is {len(blob)} bytes of JSON; the root holds {CONFIG_BYTES - 8}")
        lay = _root_layout(max_members)
        params = [
            max_members,
            DIR_CAPACITY,
            CONFIG_BYTES,
            lay.offset("dir"),
            lay.offset("config"),
            lay.offset("members"),
            len(parts),
            config_checksum(blob),
        ]
        root = Segment.create(
            shm_name(name, "root"), L.KIND_ROOT, lay.total_bytes, params, mode, state=L.STATE_INITIALIZING, gid=gid
        )
        made: dict[str, Segment] = {}
        try:
            cfg = root.region(lay.offset("config"), CONFIG_BYTES, np.int64)
            KW.store_word(cfg, 0, len(blob))
            KW.store_words(cfg, 1, L.text_words(blob))
            dirv = root.region(lay.offset("dir"), DIR_CAPACITY * DIR_ENTRY_BYTES, np.int64)
            for i, spec in enumerate(parts):
                if not re.match(r"^[a-z0-9_.]{1,39}$", spec.part) or spec.part == "root":
                    raise ConfigError(f"part name {spec.part!r} is invalid")
                seg = Segment.create(shm_name(name, spec.part), spec.kind, spec.size, spec.params, mode, gid=gid)
                made[spec.part] = seg
                if spec.init is not None:
                    spec.init(seg)
                entry = i * DIR_ENTRY_BYTES // 8
                KW.store_words(dirv, entry, L.text_words(spec.part.encode(), DIR_NAME_BYTES // 8))
                KW.store_words(dirv, entry + DIR_NAME_BYTES // 8, np.array([spec.kind, spec.size, 0], np.int64))
            system = cls(name, root, made, register=True, label=label, mode=mode, gid=gid)
        except BaseException:
            for seg in made.values():
                seg.unlink()
                seg.close()
            root.unlink()
            root.close()
            raise
        KW.word_store(root.address + L.STATE_IDX * 8, L.STATE_READY)
        return system

    @classmethod
    def attach(
        cls,
        name: str,
        *,
        timeout: float = 5.0,
        register: bool = True,
        label: str = "",
        allow_gid: int | None = None,
    ) -> System:
        """Attach to an existing system by name. Waits up to ``timeout`` seconds for a creator that
        is still laying it out. Raises ``SegmentNotFound`` if there is no such system,
        ``SegmentNotOwned`` if another user made it (unless shared with ``allow_gid``) and a
        ``SegmentError`` if it is damaged or was abandoned half-made."""
        validate_name(name)
        with _attach_lock(name, register, timeout) as inode:
            return cls._attach(name, timeout, register, label, allow_gid, inode)

    @classmethod
    def _attach(cls, name, timeout, register, label, allow_gid, inode) -> System:
        try:
            root = Segment.attach(shm_name(name, "root"), L.KIND_ROOT, allow_gid=allow_gid)
        except SegmentNotFound:
            raise SegmentNotFound(f"no nt-memory system named {name!r} (no {SHM_DIR}/{PREFIX}{name}.root)") from None
        if inode is not None and root.inode != inode:
            root.close()  # gc removed the system we locked and another took its name: start again
            raise SegmentNotFound(f"system {name!r} was replaced while attaching")
        try:
            _wait_ready(root, name, timeout)
            p = root.params
            lay = _root_layout(p[P_MAX_MEMBERS])
            if (
                p[P_DIR_CAPACITY] != DIR_CAPACITY
                or p[P_CONFIG_BYTES] != CONFIG_BYTES
                or p[P_DIR_OFFSET] != lay.offset("dir")
                or p[P_CONFIG_OFFSET] != lay.offset("config")
                or p[P_MEMBERS_OFFSET] != lay.offset("members")
                or lay.total_bytes != root.size
                or not 0 <= p[P_NPARTS] <= DIR_CAPACITY
            ):
                raise CorruptSegment(f"system {name!r}: the root's layout parameters are inconsistent")
            parts: dict[str, Segment] = {}
            try:
                for part, kind, size in _read_dir(root, p[P_DIR_OFFSET], p[P_NPARTS]):
                    try:
                        seg = Segment.attach(shm_name(name, part), kind, allow_gid=allow_gid)
                    except SegmentNotFound:
                        raise SegmentError(
                            f"system {name!r} is incomplete: part {part!r} is missing (run `nt-memory gc`)"
                        ) from None
                    parts[part] = seg
                    if seg.size != size:
                        raise CorruptSegment(f"system {name!r}: part {part!r} is {seg.size} bytes, expected {size}")
                return cls(name, root, parts, register=register, label=label, mode=root.mode, gid=allow_gid)
            except BaseException:
                for seg in parts.values():
                    seg.close()
                raise
        except BaseException:
            root.close()
            raise

    # --------------------------------------------------------------------------- later parts
    def attach_segment(self, part: str, kind: int) -> Segment:
        """Map a part made after creation (a topic ring, an embedding chunk), checking its owner."""
        return Segment.attach(shm_name(self.name, part), kind, allow_gid=self.gid)

    def create_segment(self, part: str, kind: int, size: int, params=()) -> Segment:
        """Make a part after creation, with the system's mode and group. A leftover of an appender
        that died before publishing the part (nothing refers to it) is replaced."""
        name = shm_name(self.name, part)
        try:
            seg = Segment.create(name, kind, size, params, mode=self.mode, gid=self.gid)
        except SegmentExists:
            self.attach_segment(part, kind).unlink()
            seg = Segment.create(name, kind, size, params, mode=self.mode, gid=self.gid)
        self.shm_names.append(name)
        return seg

    # ----------------------------------------------------------------------------------- lifetime
    def heartbeat(self, now_ns: int) -> None:
        if self.slot >= 0 and now_ns - self._last_beat > 0:
            self._last_beat = now_ns
            self.members.heartbeat(self.slot, now_ns)

    def owner_alive(self, owner: int) -> bool:
        if owner == self.owner:
            return True
        return self.members.owner_alive(owner)

    def close(self) -> None:
        """Leave the member table and unmap every segment. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        members = getattr(self, "members", None)
        if self.slot >= 0 and members is not None:
            members.unregister(self.owner)
        self.members = None  # type: ignore[assignment]  # closed
        for seg in self.parts.values():
            seg.close()
        root = getattr(self, "root", None)
        if root is not None:
            root.close()

    def unlink(self) -> None:
        """Remove every segment's name, the parts made after creation (embedding chunks) included;
        works before or after ``close``. Processes still attached keep their mappings."""
        for n in self.shm_names:
            _unlink_quietly(n)
        remove_system(self.name)

    def __repr__(self) -> str:
        state = f"forked from pid {self.opened_pid}" if self.forked else "closed" if self.closed else "open"
        return f"<System {self.name!r} parts={list(self.parts)} {state}>"


def _default_label() -> str:
    import sys

    return f"{os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else 'python'}"


@contextlib.contextmanager
def _attach_lock(name: str, register: bool, timeout: float):
    """Hold the root's file locked shared while a registering attach runs (gc takes it exclusive);
    yields the locked file's inode (None for an observer, which takes no lock: it changes nothing
    gc looks at)."""
    if not register or not os.path.isdir(SHM_DIR):
        yield None
        return
    path = os.path.join(SHM_DIR, f"{PREFIX}{name}.root")
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise SegmentNotFound(f"no nt-memory system named {name!r} (no {path})") from None
    except PermissionError:
        raise SegmentNotOwned(f"system {name!r} exists but belongs to another user: refusing to attach") from None
    try:
        deadline = time.monotonic() + max(timeout, 0.1)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SegmentError(f"system {name!r} is being removed by `nt-memory gc`; try again") from None
                time.sleep(0.001)
        yield os.fstat(fd).st_ino
    finally:
        os.close(fd)  # releases the lock


def _wait_ready(root: Segment, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pause = 0.0005
    while True:
        state = acquire_load(root.words, L.STATE_IDX)
        if state == L.STATE_READY:
            return
        if state != L.STATE_INITIALIZING:
            raise CorruptSegment(f"system {name!r}: root state word is {state}, not INITIALIZING or READY")
        creator = root.creator_pid
        if not pid_alive(creator, 0):
            raise SystemAbandoned(
                f"system {name!r} was never finished: its creator (pid {creator}) died while creating it; "
                "`nt-memory gc` removes it"
            )
        if time.monotonic() >= deadline:
            raise SegmentError(f"system {name!r} is still being created by pid {creator} after {timeout}s")
        time.sleep(pause)
        pause = min(pause * 2, 0.02)


def _read_config(root: Segment, offset: int, nbytes: int, checksum: int) -> dict:
    region = root.region(offset, nbytes)
    n = int(region[:8].view(np.int64)[0])
    if not 0 <= n <= nbytes - 8:
        raise CorruptSegment(f"segment {root.shm_name!r}: configuration length {n} is impossible")
    blob = region[8 : 8 + n].tobytes()
    if config_checksum(blob) != checksum:
        raise CorruptSegment(f"segment {root.shm_name!r}: its configuration does not match the header's checksum")
    try:
        return json.loads(blob)
    except ValueError as exc:
        raise CorruptSegment(f"segment {root.shm_name!r}: configuration is not valid JSON") from exc


def _read_dir(root: Segment, offset: int, nparts: int) -> list[tuple[str, int, int]]:
    region = root.region(offset, DIR_CAPACITY * DIR_ENTRY_BYTES)
    out = []
    for i in range(nparts):
        entry = region[i * DIR_ENTRY_BYTES : (i + 1) * DIR_ENTRY_BYTES]
        raw = entry[:DIR_NAME_BYTES].tobytes().rstrip(b"\0")
        try:
            part = raw.decode("ascii")
        except UnicodeDecodeError:
            part = ""
        if not re.match(r"^[a-z0-9_.]{1,39}$", part) or part == "root":
            raise CorruptSegment(f"segment {root.shm_name!r}: directory entry {i} has an invalid part name {raw!r}")
        kind, size = (int(x) for x in entry[DIR_NAME_BYTES:].view(np.int64)[:2])
        out.append((part, kind, size))
    return out


# ----------------------------------------------------------------------------- host-wide listing


def list_systems() -> list[str]:
    """Names of the systems whose root segment exists on this host."""
    try:
        files = os.listdir(SHM_DIR)
    except OSError:
        return []
    return sorted(f[len(PREFIX) : -len(".root")] for f in files if f.startswith(PREFIX) and f.endswith(".root"))


def system_files(name: str) -> list[str]:
    """Every segment file of a system, the root included, whether or not its directory lists it."""
    try:
        files = os.listdir(SHM_DIR)
    except OSError:
        return []
    return sorted(f for f in files if f.startswith(f"{PREFIX}{name}."))


@dataclasses.dataclass
class SystemInfo:
    name: str
    ok: bool
    error: str
    creator_pid: int
    created_ns: int
    parts: dict[str, int]
    members: list[MemberInfo]
    config: dict

    @property
    def live_members(self) -> list[MemberInfo]:
        return [m for m in self.members if m.alive]


def describe(name: str) -> SystemInfo:
    """Attach as an observer (no member slot taken) and describe a system."""
    try:
        system = System.attach(name, timeout=0.0, register=False)
    except SegmentNotFound:
        raise
    except SegmentError as exc:
        return SystemInfo(name, False, str(exc), 0, 0, {}, [], {})
    try:
        return SystemInfo(
            name=name,
            ok=True,
            error="",
            creator_pid=system.root.creator_pid,
            created_ns=system.root.created_ns,
            parts={"root": system.root.size} | {p: s.size for p, s in system.parts.items()},
            members=system.members.members(),
            config=system.config,
        )
    finally:
        system.close()


def remove_system(name: str) -> list[str]:
    """Unlink every segment file of ``name``. Returns the files removed."""
    removed = []
    for f in system_files(name):
        part = f[len(PREFIX) + len(name) + 1 :]
        if _unlink_quietly(shm_name(name, part)):
            removed.append(f)
    return removed


def _backlog(name: str) -> int:
    """Unflushed journal bytes of a system (0 if it has no journal or cannot be read)."""
    try:
        system = System.attach(name, timeout=0.0, register=False)
    except SegmentError:
        return 0
    try:
        seg = system.parts.get("journal")
        if seg is None:
            return 0
        ring = seg.region(JournalLayout.from_segment(seg).ring_offset, RING_HDR_BYTES, np.int64)
        return max(0, int(ring[RING_TAIL_IDX]) - int(ring[RING_HEAD_IDX]))
    except SegmentError:
        return 0
    finally:
        system.close()


def _gc_one(name: str, dry_run: bool, force: bool) -> str:
    """Remove one system if nothing needs it; returns "" when removed, else why not."""
    path = os.path.join(SHM_DIR, f"{PREFIX}{name}.root")
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return "gone already"
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return "a process is attaching to it"
        try:
            info = describe(name)
        except SegmentNotFound:
            return "gone already"
        if info.ok and info.live_members:
            return f"live members: pids {', '.join(str(m.pid) for m in info.live_members)}"
        if not info.ok and "still being created" in info.error:
            return "still being created by a live process"
        backlog = _backlog(name) if info.ok else 0
        if backlog and not force:
            return (
                f"{backlog:,} bytes of acknowledged puts are not in LMDB yet: open the system once to drain "
                "them (or gc --force to drop them)"
            )
        if not dry_run:
            remove_system(name)
        return ""
    finally:
        os.close(fd)


def gc(patterns=(), *, dry_run: bool = False, force: bool = False, on_skip=None) -> list[str]:
    """Remove systems (whose names match any of ``patterns``, shell-style; all by default) that no
    live process is attached to, and leftovers of failed creations. Never removes a system with a
    live member (a stopped process is alive), one a process is attaching to, or one whose journal
    holds acknowledged puts not yet in LMDB (unless ``force``). ``dry_run``: only report.
    ``on_skip(name, reason)`` hears about each system left alone. Returns the names removed (or,
    with ``dry_run``, that would be)."""
    removed = []

    def wanted(n: str) -> bool:
        return not patterns or any(fnmatch.fnmatchcase(n, p) for p in patterns)

    names = [n for n in list_systems() if wanted(n)]
    try:
        orphans = {f[len(PREFIX) :].split(".", 1)[0] for f in os.listdir(SHM_DIR) if f.startswith(PREFIX)}
    except OSError:
        orphans = set()
    orphans = {n for n in orphans - set(list_systems()) if wanted(n)}
    for name in sorted(names):
        why = _gc_one(name, dry_run, force)
        if not why:
            removed.append(name)
        elif on_skip is not None and why != "gone already":
            on_skip(name, why)
    for name in sorted(orphans):
        # Parts without a root: a failed creation, or one in progress (its root is published last
        # under a temporary name): leave anything touched in the last minute alone.
        young = False
        for f in system_files(name):
            try:
                young |= time.time() - os.stat(os.path.join(SHM_DIR, f)).st_mtime < ORPHAN_GRACE_S
            except OSError:
                pass
        if young:
            if on_skip is not None:
                on_skip(name, "parts without a root, made in the last minute (a creation in progress?)")
            continue
        if dry_run or remove_system(name):
            removed.append(name)
    return removed
