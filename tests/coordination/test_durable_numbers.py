"""Numbers that must only grow, across reboots too, and decisions that are durable before anyone
is told them (a reboot here: every segment unlinked, the system reopened from storage_path)."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from nt_memory import MemoryConfig, MemorySystem, Proposal, Vote
from nt_memory.coordination.consensus import ConsensusStatus
from nt_memory.errors import ConsensusError
from nt_memory.shm.system import remove_system
from tests.multiprocess import coord_workers

CTX = mp.get_context("spawn")


@pytest.fixture
def config(name, tmp_path):
    yield MemoryConfig(name=name, storage_path=str(tmp_path))
    remove_system(name)


def test_fences_grow_across_reboots(config):
    """A resource that remembers the highest fence it saw must accept the rightful holder after a
    reboot (and refuse a delayed write from before it)."""
    fences = []
    for _boot in range(3):
        with MemorySystem.open(config) as mem:
            for _ in range(3):
                with mem.lock("res", timeout=1) as token:
                    fences.append(token.fence)
            mem.unlink()
    assert fences == sorted(set(fences)), fences


def test_fences_stay_monotonic_past_a_reservation_block(config, monkeypatch):
    from nt_memory.coordination import locks

    monkeypatch.setattr(locks, "FENCE_BLOCK", 5)
    fences = []
    for _boot in range(2):
        with MemorySystem.open(config) as mem:
            for _ in range(12):  # passes the reserved mark twice each boot
                with mem.lock("res", timeout=1) as token:
                    fences.append(token.fence)
            assert mem.store.high_water(locks.FENCE_KEY) >= fences[-1]
            mem.unlink()
    assert fences == sorted(set(fences)), fences


def test_proposal_ids_and_decisions_survive_reboots(config):
    with MemorySystem.open(config) as mem:
        mem.consensus.register_voter("a", 1.0)
        mem.consensus.register_voter("b", 2.0)
        first = mem.consensus.submit_proposal(Proposal("a", {"act": "buy"}, quorum=0.5))
        assert mem.consensus.vote(Vote(first, "b", approve=True)).status == ConsensusStatus.APPROVED
        pending = mem.consensus.submit_proposal(Proposal("a", {"act": "hold"}, quorum=0.9))
        mem.unlink()
    with MemorySystem.open(config) as mem:
        assert mem.consensus.total_weight() == 3.0  # the voters came back
        second = mem.consensus.submit_proposal(Proposal("a", {"act": "sell"}, quorum=0.5))
        assert int(second) > int(pending) > int(first)
        assert mem.consensus.vote(Vote(second, "b", approve=False)).status == ConsensusStatus.REJECTED
        assert mem.consensus.result(first).status == ConsensusStatus.APPROVED  # not overwritten
        # Pending at the reboot: it can get no more votes, and says so, for good.
        assert mem.consensus.result(pending).status == ConsensusStatus.EXPIRED
        with pytest.raises(ConsensusError):
            mem.consensus.vote(Vote(pending, "a", approve=True))
        mem.unlink()
    with MemorySystem.open(config) as mem:
        assert mem.consensus.result(first).status == ConsensusStatus.APPROVED
        assert mem.consensus.result(second).status == ConsensusStatus.REJECTED
        assert mem.consensus.result(pending).status == ConsensusStatus.EXPIRED
        mem.unlink()


@pytest.mark.multiprocess
def test_a_voter_killed_inside_the_deciding_vote(config):
    """What anyone sees decided before a reboot is what is decided after it."""
    parent, child = CTX.Pipe()
    p = CTX.Process(target=coord_workers.decide_and_die, args=(config.name, config.storage_path, child))
    p.start()
    p.join(120)
    assert p.exitcode == 0, "the voter did not die inside the decision"
    pid = parent.recv()
    with MemorySystem.open(config) as mem:
        before = mem.consensus.result(pid)
        assert before.decided
        mem.unlink()
    with MemorySystem.open(config) as mem:
        after = mem.consensus.result(pid)
        assert after.status == before.status, (before, after)
        mem.unlink()
