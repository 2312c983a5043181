"""ReasoningBank: the seed's cases, a learning loop that shows the bank helps, persistence."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest

from nt_memory import MemoryConfig, MemoryDistiller, MemorySystem, Pattern, Trajectory, Verdict, VerdictJudge
from nt_memory.errors import ConfigError, InvalidEmbedding
from nt_memory.reasoningbank.verdict import VerdictResult

DIM = 16


def traj(agent, obs=100.0, pred=None, actual=None, emb=None, action="buy"):
    t = Trajectory(agent)
    t.add_observation({"price": obs}, embedding=emb)
    t.add_action(action, {"quantity": 10}, predicted_outcome=pred)
    if actual is not None:
        t.add_outcome(actual)
    return t.complete()


def test_seed_verdicts():
    judge = VerdictJudge(correct_tolerance=0.05, very_wrong_threshold=0.25)
    v = judge.judge(traj("a", pred=100.0, actual=102.0))
    assert v.verdict == Verdict.CORRECT and v.accuracy > 0.95
    assert judge.judge(traj("a", pred=100.0, actual=150.0)).verdict == Verdict.VERY_WRONG
    assert judge.judge(traj("a", pred=100.0, actual=112.0)).verdict == Verdict.INCORRECT
    assert judge.judge(traj("a", pred=None, actual=100.0)).verdict == Verdict.INSUFFICIENT
    v = judge.judge(traj("a", obs=100.0, pred=110.0, actual=105.0))
    assert v.direction_correct == 1.0 and v.confidence == 0.1
    assert judge.judge(traj("a", obs=100.0, pred=110.0, actual=95.0)).direction_correct == 0.0


def test_seed_distill_and_merge():
    d = MemoryDistiller()
    rng = np.random.default_rng(0)
    ts = [traj("agent_1", emb=rng.normal(size=DIM)) for _ in range(5)]
    patterns = d.distill(ts)
    assert len(patterns) == 1 and sorted(patterns[0].trajectory_ids) == sorted(t.id for t in ts)
    assert 0 <= patterns[0].strength <= 1
    a = Pattern(id="a", centroid=[1.0, 0.0], trajectory_ids=["x"])
    b = Pattern(id="b", centroid=[0.9, 0.1], trajectory_ids=["y"])
    merged = d.merge_similar([a, b])
    assert len(merged) == 1 and sorted(merged[0].trajectory_ids) == ["x", "y"]


def test_trajectory_json_round_trip_and_bad_input():
    t = traj("a", pred=1.0, actual=2.0, emb=[0.1] * DIM)
    back = Trajectory.from_json(t.to_json())
    assert back.to_json() == t.to_json() and back.is_complete
    with pytest.raises(ConfigError):
        t.add_outcome(1.0)  # complete: no more steps
    t2 = Trajectory("a")
    for bad in (float("nan"), float("inf"), "1", None, True):
        with pytest.raises(ConfigError):
            t2.add_outcome(bad)
    with pytest.raises(InvalidEmbedding):
        t2.add_observation({}, embedding=[float("nan")] * DIM)
    assert t2.steps == []


@pytest.fixture
def mem_config(name, tmp_path):
    return MemoryConfig(name=name, storage_path=str(tmp_path), embedding_dim=DIM)


def _market(rng, n):
    """Situation A (one region of embedding space): 'buy' is right. Situation B: 'sell' is right.
    Agents pick at random; the outcome follows the right action."""
    a, b = rng.normal(size=DIM) * 3, rng.normal(size=DIM) * 3
    out = []
    for i in range(n):
        situation = a if i % 2 == 0 else b
        right = "buy" if i % 2 == 0 else "sell"
        action = rng.choice(["buy", "sell"])
        emb = situation + rng.normal(size=DIM) * 0.3
        actual = 110.0 if action == right else 80.0
        out.append(traj(f"agent_{i % 4}", obs=100.0, pred=110.0, actual=actual, emb=emb, action=action))
    return a, b, out


def test_learning_loop_ranks_the_right_action_first(mem):
    rng = np.random.default_rng(1)
    a, b, ts = _market(rng, 80)
    for t in ts:
        mem.track_trajectory(t)
    patterns = mem.bank.distill()
    # Situations are grouped across agents: a handful of patterns, not one per agent or trajectory.
    assert 2 <= len(patterns) <= 6 and all(len(p.agent_ids) > 1 for p in patterns)
    top_a = mem.bank.retrieve(a + rng.normal(size=DIM) * 0.3, top_k=2)
    top_b = mem.bank.retrieve(b + rng.normal(size=DIM) * 0.3, top_k=2)
    assert top_a[0].action == "buy" and top_b[0].action == "sell"
    good = [p for p in patterns if not p.pitfall]
    bad = [p for p in patterns if p.pitfall]
    assert good and bad and min(p.confidence for p in good) > max(p.confidence for p in bad)
    # New verdicts move confidence: failures of 'buy' in A lower that pattern's confidence.
    before = top_a[0].confidence
    for _ in range(5):
        mem.track_trajectory(traj("agent_9", pred=110.0, actual=80.0, emb=a, action="buy"))
    after = next(p for p in mem.bank.patterns() if p.id == top_a[0].id).confidence
    assert after < before


def test_consolidation_merges_duplicates_and_flags_contradictions(mem):
    v = np.ones(DIM)
    win = VerdictResult(Verdict.CORRECT, 0.0, 1.0, 1.0, 1.0, 1, 1.0, "")
    ts = [traj("a", pred=1.0, actual=1.0, emb=v, action="buy") for _ in range(3)]
    ts += [traj("b", pred=1.0, actual=1.0, emb=v * 1.001, action="sell") for _ in range(3)]
    pats = mem.bank.distiller.distill_situations(ts, {t.id: win for t in ts})
    dup = Pattern(**(pats[0].to_json() | {"id": "dup", "trajectory_ids": ["z"]}))
    for p in pats + [dup]:
        mem.bank._save_pattern(p)
    report = mem.bank.consolidate()
    assert report["after"] == report["before"] - 1 and report["contradictions"] == 1
    assert all(p.contradicts for p in mem.bank.patterns())


def test_persistence_and_tracker(name, tmp_path):
    cfg = MemoryConfig(name=name, storage_path=str(tmp_path), embedding_dim=DIM)
    rng = np.random.default_rng(2)
    with MemorySystem.open(cfg) as mem:
        _, _, ts = _market(rng, 20)
        for t in ts:
            mem.track_trajectory(t)
        active = Trajectory("agent_x")
        active.add_observation({"price": 1.0})
        mem.track_trajectory(active)
        n = len(mem.bank.distill())
        mem.flush()
        mem.unlink()
    with MemorySystem.open(cfg) as mem:
        assert len(mem.bank.patterns()) == n
        assert len(mem.bank.trajectories(completed=True)) == 20
        assert [t.id for t in mem.bank.trajectories("agent_x", completed=False)] == [active.id]
        v = mem.bank.complete("agent_x", active.id)
        assert v.verdict == Verdict.INSUFFICIENT and mem.bank.trajectories("agent_x")[0].is_complete
        with pytest.raises(ConfigError):
            mem.bank.complete("agent_x", "nope")
        with pytest.raises(InvalidEmbedding):
            mem.track_trajectory(traj("a", emb=np.ones(DIM + 1)))
        mem.unlink()


def test_compressed_items_are_stored_compressed(mem):
    t = traj("agent_1", pred=1.0, actual=1.0, emb=np.ones(DIM))
    for _ in range(30):
        t.steps.append(t.steps[0])
    mem.track_trajectory(t)
    raw = mem.store.get("trajectories", f"agent_1\0{t.id}".encode())
    import json

    assert len(raw) < len(json.dumps(t.to_json())) // 2


def _tracker(name, path, seed, out):
    mem = MemorySystem.open(MemoryConfig(name=name, storage_path=path, embedding_dim=DIM))
    try:
        rng = np.random.default_rng(seed)
        _, _, ts = _market(rng, 10)
        for t in ts:
            mem.track_trajectory(t)
        out.put([t.id for t in ts])
    finally:
        mem.close()


@pytest.mark.multiprocess
def test_trajectories_from_two_processes_distilled_in_a_third(mem):
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_tracker, args=(mem.name, mem.config.path, 5, out)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    ids = set(out.get(timeout=5)) | set(out.get(timeout=5))
    patterns = mem.bank.distill()
    covered = {tid for p in patterns for tid in p.trajectory_ids}
    assert ids <= covered
