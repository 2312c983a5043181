"""The Part protocol (shm/parts.py): every structure of a memory system attaches as an observer,
reports stats, and verifies its shared words: sound after real use, a finding (never a crash)
after hostile bytes."""

from __future__ import annotations

import numpy as np
import pytest

from nt_memory import Proposal, Vote
from nt_memory.cli import main
from nt_memory.memory import PARTS, observe
from nt_memory.shm.parts import Part


def _use(mem) -> None:
    for i in range(300):
        mem.put("ns", f"k{i}", {"i": i}, embedding=np.random.default_rng(i).random(mem.embedding_dim))
    for i in range(0, 300, 4):
        mem.delete("ns", f"k{i}")
    mem.publish("swarm/a", b"x")
    sub = mem.subscribe("swarm/a")
    mem.publish("swarm/a", {"n": 1})
    assert sub.recv(5) == {"n": 1}
    token = mem.acquire_lock("desk")
    mem.consensus.register_voter("a", 1.0)
    pid = mem.consensus.submit_proposal(Proposal(proposer="a", data="buy", quorum=0.6))
    mem.consensus.vote(Vote(proposal_id=pid, voter="a", approve=True))
    mem.consensus.submit_proposal(Proposal(proposer="a", data="sell", quorum=0.6))
    mem.flush()
    return token


def test_every_part_conforms_and_observes_a_used_system(mem):
    for cls in PARTS:
        assert isinstance(cls.PARTS, tuple) and callable(cls.part_specs) and callable(cls.attach)
    token = _use(mem)
    assert mem.verify() == {p: [] for p in ("l1", "journal", "embed", "topics", "locks", "consensus")}
    with observe(mem.name) as (system, parts):
        assert system.slot == -1  # an observer takes no member slot
        assert set(parts) == {"l1", "journal", "embed", "topics", "locks", "consensus"}
        for name, part in parts.items():
            assert isinstance(part, Part)
            assert part.verify() == [], name
        stats = {name: part.stats() for name, part in parts.items()}
    assert stats["l1"]["entries"] == len(mem.keys("ns"))
    assert stats["embed"]["records"] >= 300
    assert stats["topics"]["topics"]["swarm/a"]["messages"] == 2
    assert stats["locks"]["held"] == 1 and stats["locks"]["holders"][0]["fence"] == token.fence
    assert stats["consensus"]["voters"] == 1 and len(stats["consensus"]["open"]) == 1


def _l1_slots(mem) -> tuple[np.ndarray, int]:
    from nt_memory.shm.l1_layout import L1Layout

    tl = L1Layout.from_segment(mem.system.parts["l1"])
    slots = mem.system.parts["l1"].region(tl.slots_offset, tl.nslots * 32, np.int64)
    return slots, int(np.flatnonzero(slots[0::4] > 1)[0]) * 4 + 2  # a live slot's reference


# (part, the shared words, the word, what a co-tenant writes there)
HOSTILE = {
    "l1": lambda mem: (*_l1_slots(mem), None),  # None: flip a bit of the reference
    "journal": lambda mem: (mem.journal.ring, 16, int(mem.journal.ring[16]) + 8),  # TAIL unaligned
    "topics": lambda mem: (mem.pubsub.topic("swarm/a").ring, 49, 1 << 40),  # LATEST past TAIL
    "locks": lambda mem: (mem.locks.slots, 2, 1 << 50),  # a fence past the reserved limit
    "consensus": lambda mem: (mem.consensus.words, 3, np.float64(-1.0).view(np.int64)),  # total weight < 0
}


@pytest.mark.parametrize("part", sorted(HOSTILE))
def test_hostile_bytes_are_found_not_crashed_on(mem, part, capsys):
    _use(mem)
    words, idx, value = HOSTILE[part](mem)
    before = int(words[idx])
    words[idx] = before ^ 0x10 if value is None else value
    try:
        with observe(mem.name) as (_, parts):
            problems = parts[part].verify()
            others = {n: p.verify() for n, p in parts.items() if n != part}
        assert problems and all(isinstance(line, str) for line in problems)
        assert others == {n: [] for n in others}
        assert main(["verify", mem.name]) == 1
        assert f"{part}: {len(problems)} problem(s)" in capsys.readouterr().out
    finally:
        words[idx] = before  # so that the fixture's close can drain and detach


def test_inspect_and_verify_of_a_sound_system(mem, capsys):
    _use(mem)
    assert main(["verify", mem.name]) == 0
    assert capsys.readouterr().out.count(": ok") == 6
    assert main(["inspect", mem.name]) == 0
    out = capsys.readouterr().out
    assert "topic: swarm/a  messages=2" in out and "locks: 1 held of 1 named" in out and "consensus: voters=1" in out
