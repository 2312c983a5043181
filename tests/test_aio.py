"""AsyncMemorySystem (issue 14): the whole API as coroutines, waits that never hold a thread,
cancellation that loses nothing, and the seed's snippets in an ``async def main()``."""

from __future__ import annotations

import asyncio
import datetime
import inspect
import multiprocessing as mp
import random
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from nt_memory import ConfigError, ConsensusStatus, LockTimeout, MemorySystem, Proposal, Trajectory, Vote
from nt_memory.aio import AsyncMemorySystem, AsyncNamespaceView
from nt_memory.coordination.namespaces import NamespaceView
from nt_memory.shm.wait import WAKER
from tests.multiprocess import coord_workers as W

CTX = mp.get_context("spawn")
INTERNAL = {"read_lower"}  # the tier interface the facades are built on, not a user verb


def _join(procs, timeout=120):
    for p in procs:
        p.join(timeout)
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0] * len(procs)


def _public_methods(cls) -> set[str]:
    return {n for n, v in vars(cls).items() if not n.startswith("_") and (callable(v) or isinstance(v, property))}


def test_every_public_method_is_mirrored_as_a_coroutine():
    for sync_cls, async_cls in ((MemorySystem, AsyncMemorySystem), (NamespaceView, AsyncNamespaceView)):
        missing = _public_methods(sync_cls) - INTERNAL - _public_methods(async_cls)
        assert not missing, f"{async_cls.__name__} lacks {sorted(missing)}"
        for n in _public_methods(sync_cls) - INTERNAL:
            attr = inspect.getattr_static(async_cls, n)
            if n in ("open", "namespace", "unlink", "bank", "name", "closed", "lock", "scan"):
                continue  # an opener, a view, a property, a context manager or an async iterator
            assert inspect.iscoroutinefunction(attr), f"{async_cls.__name__}.{n} is not a coroutine"


def test_open_is_awaitable_and_an_async_context_manager(mem_config):
    async def main():
        async with AsyncMemorySystem.open(mem_config) as mem:
            await mem.put("a", "k", {"v": 1})
            assert await mem.get("a", "k") == {"v": 1}
        assert mem.closed
        mem2 = await AsyncMemorySystem.open(mem_config)
        try:
            assert await mem2.get("a", "k") == {"v": 1} and await mem2.exists("a", "k")
        finally:
            await mem2.close()
            mem2.unlink()

    asyncio.run(main())


def test_seed_snippets_run_in_async_main(mem_config):
    """The seed README's examples (its Rust, as Python coroutines), in order."""

    async def main():
        async with AsyncMemorySystem.open(mem_config) as memory:
            # Initialize, store, retrieve, semantic search
            position_data = {"symbol": "AAPL", "qty": 10}
            await memory.put("agent_1", "position", position_data, embedding=np.ones(128, np.float32))
            assert await memory.get("agent_1", "position") == position_data
            results = await memory.search_similar("agent_1", np.ones(128, np.float32), top_k=10)
            assert results[0].key == "position"
            # Trajectory tracking: one with an outcome is judged and completed
            trajectory = Trajectory("agent_1")
            trajectory.add_observation({"price": 100.0}, np.ones(128, np.float32))
            trajectory.add_action("buy", {"quantity": 10}, predicted_outcome=110.0)
            trajectory.add_outcome(105.0)
            verdict = await memory.track_trajectory(trajectory)
            assert verdict is not None and trajectory.is_complete and trajectory.score() == 105.0
            # Cross-agent communication
            rx = await memory.subscribe("agent_1/updates")
            await memory.publish("agent_1/updates", {"fill": 1})
            assert await rx.recv() == {"fill": 1}
            # Distributed locks
            token = await memory.acquire_lock("shared_resource", timeout=datetime.timedelta(seconds=1))
            await memory.release_lock(token)
            # Consensus voting
            for agent in ("agent_1", "agent_2", "agent_3"):
                await memory.consensus.register_voter(agent)
            proposal = Proposal(proposer="agent_1", data={"action": "rebalance"}, quorum=0.67)
            proposal_id = await memory.consensus.submit_proposal(proposal)
            result = await memory.consensus.vote(Vote(proposal_id, "agent_2", True, 1.0))
            assert result.status is ConsensusStatus.PENDING
            result = await memory.consensus.vote(Vote(proposal_id, "agent_3", True, 1.0))
            assert result.status is ConsensusStatus.PENDING  # 2 of 3 is 0.667 < 0.67 (README: differences)
            result = await memory.consensus.vote(Vote(proposal_id, "agent_1", True, 1.0))
            assert result.status is ConsensusStatus.APPROVED
            assert (await memory.consensus.wait(proposal_id, timeout=1.0)).approved
            # Integration with other agents
            await memory.put("mcp_cache", "tool_result_123", {"ok": True})
            await memory.put("models", "strategy_v1", np.zeros(16, np.float32))
            memory.unlink()

    asyncio.run(main())


def test_habits_and_views_through_the_async_api(mem_config):
    async def main():
        async with AsyncMemorySystem.open(mem_config) as mem:
            assert await mem.incr("c", "n") == 1 and await mem.incr("c", "n", 4) == 5
            assert await mem.compare_and_set("c", "n", 5, 6) and not await mem.compare_and_set("c", "n", 5, 7)
            await mem.put("c", "t", 1, ttl=30)
            assert 29 < await mem.ttl("c", "t") <= 30 and await mem.expire("c", "t", None)
            await mem.put_many("c", {"x1": 1, "x2": 2})
            assert await mem.get_many("c", ["x1", "nope", "x2"]) == [1, None, 2]
            assert [k async for k in mem.scan("c", "x")] == ["x1", "x2"]
            view = mem.namespace("agent_7")
            await view.put("pos", {"q": 1})
            assert await view.get("pos") == {"q": 1} and await view.exists("pos")
            assert await view.incr("hits") == 1 and await view.keys() == ["hits", "pos"]
            assert await view.count() == 2
            with pytest.raises(TypeError):
                await mem.incr("c", "x1", 1.5)
            await mem.put("c", "s", "text")
            with pytest.raises(TypeError, match="not an integer"):
                await mem.incr("c", "s")
            with pytest.raises(ConfigError, match="ttl"):
                await mem.expire("c", "t", -1)
            with pytest.raises(ConfigError, match="timeout"):
                await mem.acquire_lock("l", timeout=-1)
            with pytest.raises(ConfigError, match="pattern"):
                await mem.psubscribe("bad pattern")
            sub = await mem.subscribe("t")
            with pytest.raises(ConfigError, match="timeout"):
                await sub.recv(timeout=-0.5)
            mem.unlink()

    asyncio.run(main())


def test_several_processes_publish_to_one_async_subscriber(mem):
    n, pubs = 1500, 3

    async def main():
        amem = AsyncMemorySystem(mem)
        sub = await amem.subscribe("fan/in")
        ready = CTX.Barrier(pubs + 1)
        procs = [
            CTX.Process(target=W.paced_publisher, args=(mem.name, mem.config.path, "fan/in", w, n, 0.0, ready))
            for w in range(pubs)
        ]
        for p in procs:
            p.start()
        await asyncio.to_thread(ready.wait, 60)
        got = []
        deadline = time.monotonic() + 60
        async for msg in sub:
            got.append((msg["who"], msg["i"]))
            if len(got) + sub.dropped >= n * pubs or time.monotonic() > deadline:
                break
        await asyncio.to_thread(_join, procs)
        return got, sub.dropped

    got, dropped = asyncio.run(main())
    assert len(got) + dropped == n * pubs and dropped == 0
    for w in range(pubs):
        assert [i for who, i in got if who == w] == list(range(n))


def test_cancelling_receives_at_random_points_loses_no_message(mem):
    """The issue's finding: a cancelled ``arecv`` left a thread that swallowed the next message.
    Here a publisher process sends 400 messages at random pauses while the receiver cancels
    receives at random times; afterwards every message arrived exactly once, in order."""
    n = 400
    rnd = random.Random(7)

    async def main():
        sub = mem.subscribe("cancel/me")
        ready = CTX.Barrier(2)
        pub = CTX.Process(target=W.paced_publisher, args=(mem.name, mem.config.path, "cancel/me", 0, n, 0.003, ready))
        pub.start()
        await asyncio.to_thread(ready.wait, 60)
        got, cancelled = [], 0
        deadline = time.monotonic() + 60
        while len(got) + sub.dropped < n and time.monotonic() < deadline:
            task = asyncio.ensure_future(sub.arecv(timeout=5.0))
            await asyncio.sleep(rnd.choice([0, 0.0002, 0.001, 0.002]))
            if not task.done() and rnd.random() < 0.5:
                task.cancel()
                cancelled += 1
            try:
                msg = await task
            except asyncio.CancelledError:
                continue
            if msg is not None:
                got.append(msg["i"])
        await asyncio.to_thread(_join, [pub])
        assert sub.try_recv() is None
        return got, sub.received, sub.dropped, cancelled

    got, received, dropped, cancelled = asyncio.run(main())
    assert cancelled > 10  # the test did cancel waits
    assert got == list(range(n)) and received == n and dropped == 0
    assert not WAKER._watches  # nothing left waiting


def test_asyncio_run_returns_promptly_after_a_cancelled_receive(mem):
    """The issue's hang: ``asyncio.wait_for(sub.arecv(), 0.3)`` with no message kept a thread in
    ``recv`` and ``asyncio.run`` never returned. Run in a fresh interpreter, bounded."""
    script = textwrap.dedent(
        f"""
        import asyncio
        from nt_memory import MemoryConfig, MemorySystem
        mem = MemorySystem.open(MemoryConfig(name={mem.name!r}, storage_path={mem.config.path!r}))
        sub = mem.subscribe("quiet")
        async def main():
            try:
                await asyncio.wait_for(sub.arecv(), 0.3)
            except TimeoutError:
                print("timed out")
        asyncio.run(main())
        mem.publish("quiet", 1)
        print("next", sub.try_recv())
        mem.close()
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["timed", "out", "next", "1"]  # the message went to the next receive


def test_a_coroutine_waiting_for_a_lock_leaves_the_loop_running(mem):
    ready = CTX.Event()
    holder = CTX.Process(target=W.timed_holder, args=(mem.name, mem.config.path, 1.0, ready))
    holder.start()
    assert ready.wait(60)

    async def main():
        amem = AsyncMemorySystem(mem)
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.ensure_future(ticker())
        with pytest.raises(LockTimeout):
            await amem.acquire_lock("book", timeout=0.2)  # held elsewhere: times out, loop ran
        during_timeout = ticks
        async with amem.lock("book", timeout=30) as token:  # granted when the holder lets go
            assert token.fence > 0
            waited_ticks = ticks
        t.cancel()
        return during_timeout, waited_ticks

    during_timeout, waited_ticks = asyncio.run(main())
    _join([holder])
    assert during_timeout >= 5 and waited_ticks > during_timeout  # the loop kept ticking while waiting


def test_a_cancelled_lock_wait_passes_its_wake_on(mem):
    async def main():
        amem = AsyncMemorySystem(mem)
        token = await amem.acquire_lock("res", timeout=1)
        waiters = [asyncio.ensure_future(amem.acquire_lock("res", timeout=10)) for _ in range(2)]
        await asyncio.sleep(0.05)
        waiters[0].cancel()
        await amem.release_lock(token)
        second = await asyncio.wait_for(waiters[1], 5)  # the survivor gets it
        await amem.release_lock(second)
        with pytest.raises(asyncio.CancelledError):
            await waiters[0]
        again = await amem.acquire_lock("res", timeout=1)  # nothing was left held
        await amem.release_lock(again)

    asyncio.run(main())
    assert not WAKER._watches


def test_async_pattern_subscription_across_processes(mem):
    topics = ["swarm/a1/updates", "swarm/a2/updates", "swarm/a2/chat"]
    n = 300

    async def main():
        amem = AsyncMemorySystem(mem)
        sub = await amem.psubscribe("swarm/*/updates")
        ready = CTX.Barrier(2)
        pub = CTX.Process(target=W.topic_publisher, args=(mem.name, mem.config.path, topics, n, ready))
        pub.start()
        await asyncio.to_thread(ready.wait, 60)
        got: dict[str, list[int]] = {}
        deadline = time.monotonic() + 60
        while sub.received + sub.dropped < 2 * n and time.monotonic() < deadline:
            found = await sub.recv(timeout=5.0)
            if found is not None:
                got.setdefault(found[0], []).append(found[1]["i"])
        await asyncio.to_thread(_join, [pub])
        return got, sub.received, sub.dropped

    got, received, dropped = asyncio.run(main())
    assert sorted(got) == ["swarm/a1/updates", "swarm/a2/updates"] and received + dropped == 2 * n


def test_consensus_wait_in_a_coroutine_wakes_on_a_vote_from_a_thread(mem):
    async def main():
        amem = AsyncMemorySystem(mem)
        for agent in ("a", "b"):
            await amem.consensus.register_voter(agent)
        pid = await amem.consensus.submit_proposal(Proposal("a", None, quorum=0.5))
        threading.Timer(0.1, mem.consensus.vote, args=(Vote(pid, "b", True),)).start()
        result = await amem.consensus.wait(pid, timeout=10)
        return result

    assert asyncio.run(main()).approved
