"""Single-process semantics: locks, consensus edge cases, namespaces, pub/sub limits."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from nt_memory import ConsensusStatus, Proposal, Vote
from nt_memory.coordination.namespaces import parse_swarm_key, swarm_key
from nt_memory.errors import ConfigError, ConsensusError, LockTimeout, StaleToken, ValueTooLarge
from nt_memory.shm.layout import float_word


def test_fences_grow_and_stale_tokens_are_refused(mem):
    fences = []
    for _ in range(5):
        t = mem.acquire_lock("res", timeout=1)
        fences.append(t.fence)
        mem.release_lock(t)
    assert fences == sorted(fences) and len(set(fences)) == 5
    with pytest.raises(StaleToken):
        mem.release_lock(t)


def test_lease_expiry_frees_the_lock_and_stales_the_token(mem):
    t1 = mem.acquire_lock("res", lease=0.1)
    t0 = time.monotonic()
    t2 = mem.acquire_lock("res", timeout=5)
    assert time.monotonic() - t0 < 1.0 and t2.fence > t1.fence
    with pytest.raises(StaleToken):
        mem.release_lock(t1)
    mem.release_lock(t2)


def test_lock_timeout_and_context_manager(mem):
    with mem.lock("res", timeout=1) as token:
        assert token.name == "res"
        err = []

        def other():
            try:
                mem.acquire_lock("res", timeout=0.2)
            except LockTimeout as exc:
                err.append(exc)

        th = threading.Thread(target=other)
        th.start()
        th.join(5)
        assert len(err) == 1
    mem.release_lock(mem.acquire_lock("res", timeout=0.5))


@pytest.mark.parametrize("bad", [dict(name=""), dict(name=5), dict(name="x", lease=-1), dict(name="x", timeout="1")])
def test_bad_lock_arguments(mem, bad):
    with pytest.raises(ConfigError):
        mem.acquire_lock(bad.pop("name"), **bad)


def _voters(c, weights):
    for agent, w in weights.items():
        c.register_voter(agent, w)


def test_exactly_at_quorum_is_approved(mem):
    c = mem.consensus
    _voters(c, {"a": 1, "b": 1, "c": 1, "d": 1})
    pid = c.submit_proposal(Proposal("a", {"x": 1}, quorum=0.5))
    assert c.vote(Vote(pid, "a", True)).status == ConsensusStatus.PENDING
    r = c.vote(Vote(pid, "b", True))
    assert r.status == ConsensusStatus.APPROVED and r.approve_weight == 2 and r.total_weight == 4


def test_weights_count_and_rejection_when_unreachable(mem):
    c = mem.consensus
    _voters(c, {"big": 3.0, "s1": 1.0, "s2": 1.0})
    pid = c.submit_proposal(Proposal("s1", None, quorum=0.6))  # needs 3.0 of 5.0
    assert c.vote(Vote(pid, "big", False)).status == ConsensusStatus.REJECTED  # 2.0 left < 3.0
    pid2 = c.submit_proposal(Proposal("s1", None, quorum=0.6))
    assert c.vote(Vote(pid2, "big", True, weight=3.0)).status == ConsensusStatus.APPROVED


def test_duplicate_vote_unknown_voter_wrong_weight(mem):
    c = mem.consensus
    _voters(c, {"a": 1, "b": 1, "c": 1})
    pid = c.submit_proposal(Proposal("a", None, quorum=0.67))
    c.vote(Vote(pid, "a", True))
    with pytest.raises(ConsensusError, match="already voted"):
        c.vote(Vote(pid, "a", False))
    with pytest.raises(ConsensusError, match="not registered"):
        c.vote(Vote(pid, "stranger", True))
    with pytest.raises(ConsensusError, match="differs"):
        c.vote(Vote(pid, "b", True, weight=2.0))
    with pytest.raises(ConsensusError, match="unknown proposal"):
        c.vote(Vote("999999", "b", True))
    r = c.result(pid)
    assert r.votes == 1 and r.approve_weight == 1 and r.status == ConsensusStatus.PENDING


def test_expiry_and_wait(mem):
    c = mem.consensus
    _voters(c, {"a": 1, "b": 1})
    pid = c.submit_proposal(Proposal("a", None, quorum=1.0, timeout=0.2))
    t0 = time.monotonic()
    r = c.wait(pid, timeout=5)
    assert r.status == ConsensusStatus.EXPIRED and time.monotonic() - t0 < 1.0
    r2 = c.vote(Vote(pid, "b", True))
    assert r2.status == ConsensusStatus.EXPIRED and r2.votes == 0  # a decided result never changes
    mem.flush()
    assert mem.store.get("consensus", f"decision/{pid}".encode()) is not None


def test_wait_returns_as_soon_as_decided(mem):
    c = mem.consensus
    _voters(c, {"a": 1, "b": 1})
    pid = c.submit_proposal(Proposal("a", None, quorum=1.0))
    threading.Timer(0.2, lambda: (c.vote(Vote(pid, "a", True)), c.vote(Vote(pid, "b", True)))).start()
    t0 = time.monotonic()
    assert c.wait(pid, timeout=10).approved
    assert time.monotonic() - t0 < 2.0


@pytest.mark.parametrize("q", [0, 1.5, -0.1, "half"])
def test_bad_quorum(mem, q):
    with pytest.raises(ConfigError):
        mem.consensus.submit_proposal(Proposal("a", None, quorum=q))


def test_namespace_view_is_isolated(mem):
    a, b = mem.namespace("agent_1"), mem.namespace("agent_2")
    a.put("pos", 1)
    a.put("../agent_2/pos", 9)
    b.put("pos", 2)
    assert (a.get("pos"), b.get("pos"), b.get("../agent_2/pos")) == (1, 2, None)
    assert sorted(a.keys()) == ["../agent_2/pos", "pos"] and b.keys() == ["pos"]
    a.delete("pos")
    assert a.get("pos") is None and b.get("pos") == 2
    assert swarm_key("agent_1", "pos") == "swarm/agent_1/pos"
    assert parse_swarm_key("swarm/agent_1/a/b") == ("agent_1", "a/b")
    for bad in ("", "a/b", None, "x" * 49):
        with pytest.raises(ConfigError):
            mem.namespace(bad)


def test_pubsub_limits_and_async(mem):
    with pytest.raises(ConfigError):
        mem.subscribe("bad topic!")
    with pytest.raises(ValueTooLarge, match="at most"):
        mem.publish("t", b"x" * (1 << 20))
    sub = mem.subscribe("t")
    assert sub.recv(timeout=0.05) is None

    async def main():
        asyncio.get_running_loop().call_later(0.1, mem.publish, "t", {"hello": 1})
        return await sub.arecv(timeout=5)

    assert asyncio.run(main()) == {"hello": 1}


def test_a_half_applied_consensus_update_is_replayed_by_the_next_holder(mem):
    """A holder killed between staging an update and finishing it: the next holder replays it, so a
    voter's bit is never set without its weight (or the reverse)."""
    from nt_memory.coordination import consensus as K

    c = mem.consensus
    _voters(c, {"a": 1, "b": 1, "c": 1})
    pid = c.submit_proposal(Proposal("a", None, quorum=1.0))
    _, base = c._slot(pid)
    slot = c._voter_slot(b"a", False)
    # Stage what vote(a, approve) writes, then "die": the words themselves are not written.
    writes = [
        (base + K.P_VOTED + slot // 64, 1 << (slot % 64) if slot % 64 < 63 else -(1 << 63)),
        (base + K.P_NVOTES, 1),
        (base + K.P_APPROVE, float_word(1.0)),
    ]
    for i, (idx, value) in enumerate(writes):
        c.words[K.C_REDO + 2 * i] = idx
        c.words[K.C_REDO + 2 * i + 1] = value
    c.words[K.C_REDO_COUNT] = len(writes)
    r = c.result(pid)  # the next holder of the lock replays the staged update
    assert (r.votes, r.approve_weight) == (1, 1.0) and int(c.words[K.C_REDO_COUNT]) == 0
    with pytest.raises(ConsensusError, match="already voted"):
        c.vote(Vote(pid, "a", True))
    assert c.vote(Vote(pid, "b", True)).approve_weight == 2.0


_BLOCKED_RECEIVER = """
import sys
from nt_memory import MemoryConfig, MemorySystem
mem = MemorySystem.open(MemoryConfig(name=sys.argv[1], storage_path=sys.argv[2]))
sub = mem.subscribe("idle/topic")
print("waiting", flush=True)
try:
    sub.recv()  # no timeout: nothing will be published
except KeyboardInterrupt:
    print("interrupted", flush=True)
finally:
    mem.close()
"""


def test_ctrl_c_ends_a_receive_that_waits_with_no_timeout(name, tmp_path):
    """A receive with no timeout sleeps with no timer armed; SIGINT still ends it at once."""
    import signal
    import subprocess
    import sys

    p = subprocess.Popen(
        [sys.executable, "-c", _BLOCKED_RECEIVER, name, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "waiting"
        time.sleep(0.3)  # asleep in the futex by now
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=30)  # a wait that missed the signal would sleep forever
        assert out.strip() == "interrupted" and p.returncode == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
