"""Hostile or corrupt shared memory: a co-tenant that changes any one word of any segment gets
errors, never a signal (SIGSEGV, SIGBUS) or a hang in another process.

The cases cover every structure's control words and a sample of its records: the table header's
shape and limits, stripe locks and intents, slots, the arena's bump pointer, class sizes and free
lists, block headers, the journal's capacity, positions, locks and records, topic rings, lock
slots, the consensus redo log and ids, the embedding log's counts and records, the member table.
The default run writes three hostile values into each; the slow run adds random words.
"""

from __future__ import annotations

import multiprocessing as mp
import random

import pytest

from nt_memory.kernels.layout import arena as A
from nt_memory.kernels.layout import ring as R
from nt_memory.kernels.layout import table as T
from nt_memory.shm import coord_layout as C
from nt_memory.shm import embed_layout as E
from nt_memory.shm.journal_layout import JournalLayout
from nt_memory.shm.l1_layout import ArenaLayout, L1Layout
from nt_memory.shm.system import P_MEMBERS_OFFSET, PREFIX, System, remove_system
from tests.multiprocess import hostile_workers as H

pytestmark = pytest.mark.multiprocess
CTX = mp.get_context("spawn")
HOSTILE = (-1, (1 << 40) + 8)
HOSTILE_SLOW = (-1, (1 << 40) + 8, 0x7FFF_FFFF, 1)


def _words(name: str, sample: int, rnd: random.Random) -> list[tuple[str, int, str]]:
    """(part file, byte offset, label) of the words to attack, from an observer's view."""
    sysm = System.attach(name, register=False)
    try:
        f = lambda part: f"{PREFIX}{name}.{part}"  # noqa: E731
        out = []
        tl = L1Layout.from_segment(sysm.parts["l1"])
        for idx in (0, 1, 2, 3, 4, 5, 6, 8, 16, 17, 24, 40, 41, 42, 43, 44, 45):
            out.append((f("l1"), tl.table_offset + idx * 8, f"table header word {idx}"))
        for w in range(10):
            out.append((f("l1"), tl.stripes_offset + w * 8, f"stripe 0 word {w}"))
        for s in rnd.sample(range(tl.nslots), 6):
            for w in (0, 1, 2, 3):
                out.append((f("l1"), tl.slots_offset + (s * T.SLOT_WORDS + w) * 8, f"slot {s} word {w}"))
        al = ArenaLayout.from_segment(sysm.parts["arena"])
        for idx in (
            0,
            1,
            8,
            16,
            A.ARENA_CLASS_SIZE_IDX,
            A.ARENA_CLASS_SIZE_IDX + 3,
            A.ARENA_FREE_HEAD_IDX,
            A.ARENA_FREE_HEAD_IDX + 8,
            A.ARENA_FREE_HEAD_IDX + 16,
        ):
            out.append((f("arena"), al.arena_offset + idx * 8, f"arena header word {idx}"))
        for blk in (16, 64, 128, 256, 512):
            out.append((f("arena"), al.data_offset + blk, f"arena block at {blk} word 0"))
            out.append((f("arena"), al.data_offset + blk + 8, f"arena block at {blk} lengths"))
        jl = JournalLayout.from_segment(sysm.parts["journal"])
        for idx in (R.RING_CAPACITY_IDX, R.RING_LOCK_IDX, R.RING_TAIL_IDX, R.RING_HEAD_IDX, 40, 41, 42, 43, 56, 57):
            out.append((f("journal"), jl.ring_offset + idx * 8, f"journal ring word {idx}"))
        for rec in (0, 8, 16, 24, 64, 128):
            out.append((f("journal"), jl.data_offset + rec, f"journal data at {rec}"))
        topic = "topic.0"
        toff = C.TopicRingLayout.for_capacity(1 << 20)
        for idx in (
            R.RING_CAPACITY_IDX,
            R.RING_LOCK_IDX,
            R.RING_TAIL_IDX,
            R.RING_TAIL_INTENT_IDX,
            R.RING_LATEST_IDX,
            R.RING_MSG_COUNT_IDX,
        ):
            out.append((f(topic), toff.ring_offset + idx * 8, f"topic ring word {idx}"))
        for rec in (0, 8, 16, 24):
            out.append((f(topic), toff.data_offset + rec, f"topic data at {rec}"))
        tparams = sysm.parts["topics"].params
        tpl = C.TopicsLayout.for_count(tparams[0], tparams[3])
        for w in (0, 1, 8, 9, 10):
            out.append((f("topics"), tpl.ctl_offset + w * 8, f"topics word {w}"))
        for w in range(C.SUB_SINCE_IDX + 1):  # the subscriber board's first entries, every word
            for entry in (0, 1):
                word = entry * C.SUB_WORDS + w
                out.append((f("topics"), tpl.subs_offset + word * 8, f"subscriber board entry {entry} word {w}"))
        ll = C.LocksLayout.for_count(sysm.parts["locks"].params[0])
        for w in range(6):
            out.append((f("locks"), ll.ctl_offset + w * 8, f"locks control word {w}"))
        for s in rnd.sample(range(ll.max_locks), 3):
            for w in (0, 1, 2, 3, 5, 6):
                out.append((f("locks"), ll.slots_offset + (s * 16 + w) * 8, f"lock slot {s} word {w}"))
        for w in (0, 1, 2, 3, 4, 5, 6, 16, 17):
            out.append((f("consensus"), 128 + w * 8, f"consensus word {w}"))
        el = E.EmbedLayout.from_segment(sysm.parts["embed"])
        for w in (E.LOCK_IDX, E.COUNT_IDX, E.NCHUNKS_IDX, E.DIM_IDX, E.RECORD_BYTES_IDX, E.RELEASED_IDX):
            out.append((f("embed"), el.ctl_offset + w * 8, f"embedding log word {w}"))
        lay = el.chunk_layout()
        for w in (0, 1):
            out.append((f("embed.0"), lay.offset("chunk") + w * 8, f"chunk word {w}"))
        for r in (0, 1, 5):
            for w in (0, 1, 2):
                off = lay.offset("headers") + r * E.RECORD_HDR_BYTES + w * 8
                out.append((f("embed.0"), off, f"embedding record {r} word {w}"))
        members = sysm.root.params[P_MEMBERS_OFFSET]
        for w in (0, 1, 2, 16, 17):
            out.append((f("root"), members + w * 8, f"member table word {w}"))
        if sample:
            for part, seg in sorted(sysm.parts.items()):
                for _ in range(sample):
                    off = rnd.randrange(16, seg.size // 8) * 8
                    out.append((f(part), off, f"{part} random word at {off}"))
        return out
    finally:
        sysm.close()


def _attack(name, path, sample, seed, values=HOSTILE):
    p = CTX.Process(target=H.populate, args=(name, path))
    p.start()
    p.join(120)
    assert p.exitcode == 0
    rnd = random.Random(seed)
    cases = [(part, off, value, label) for part, off, label in _words(name, sample, rnd) for value in values]
    parent, child = CTX.Pipe()
    p = CTX.Process(target=H.corrupt_and_operate, args=(name, path, cases, child))
    p.start()
    last = -1
    errors = 0
    try:
        while True:
            assert parent.poll(120), f"hung after case {last}: {cases[last + 1][3] if last + 1 < len(cases) else '-'}"
            kind, i, n = parent.recv()
            if kind == "done":
                break
            last, errors = i, errors + n
        p.join(60)
    finally:
        if p.is_alive():
            p.kill()
            p.join(5)
    failed = cases[last + 1][3] if last + 1 < len(cases) else "-"
    assert p.exitcode == 0, f"the victim died (exit {p.exitcode}) on case {last + 1}: {failed}"
    assert last == len(cases) - 1
    return len(cases), errors


def test_one_hostile_word_never_kills_another_process(name, tmp_path):
    try:
        n, errors = _attack(name, str(tmp_path), 0, 1)
        assert n > 250 and errors > 0
    finally:
        remove_system(name)


@pytest.mark.slow
def test_random_hostile_words_never_kill_another_process(name, tmp_path):
    try:
        _attack(name, str(tmp_path), 100, 2, HOSTILE_SLOW)
    finally:
        remove_system(name)
