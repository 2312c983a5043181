"""A typed user's script: ``mypy --strict`` must accept it (tests/test_typing.py). Not run."""

from __future__ import annotations

import asyncio
import datetime

import numpy as np

from nt_memory import LockToken, MemoryConfig, MemorySystem, Proposal, Trajectory, Vote
from nt_memory.aio import AsyncMemorySystem
from nt_memory.values import Value


def sync_user(cfg: MemoryConfig) -> int:
    mem: MemorySystem = MemorySystem.open(cfg)
    with mem:
        order = {"qty": 10, "side": "buy", "px": 101.5}
        mem.put("agent_1", "order", order, ttl=datetime.timedelta(seconds=30))
        mem.put("agent_1", "vec", np.zeros(8), ttl=2.5)
        value: Value = mem.get("agent_1", "order")
        left: float | None = mem.ttl("agent_1", "order")
        assert mem.expire("agent_1", "order", 60)
        hits: int = mem.incr("ctr", "hits", 2)
        swapped: bool = mem.compare_and_set("ctr", "v", None, b"x")
        many: list[object] = mem.get_many("agent_1", ["order", "vec"])
        keys: list[str] = list(mem.scan("agent_1", prefix="o"))
        mem.put_many("agent_1", {"a": 1, "b": 2}, ttl=5)
        token: LockToken = mem.acquire_lock("book", timeout=1.0, lease=datetime.timedelta(seconds=5))
        token = mem.extend_lock(token, 10)
        mem.release_lock(token)
        with mem.lock("book", timeout=1.0) as held:
            fence: int = held.fence
        sub = mem.psubscribe("swarm/*/updates")
        mem.publish("swarm/a/updates", {"px": 1.0})
        found = sub.recv(timeout=0.1)
        view = mem.namespace("agent_7")
        view.put("pos", [1, 2, 3])
        n: int = view.incr("n")
        t = Trajectory("agent_1").add_observation({"price": 100.0}).add_outcome(1.0)
        mem.track_trajectory(t)
        pid: str = mem.consensus.submit_proposal(Proposal("agent_1", {"x": 1}, quorum=0.5))
        mem.consensus.vote(Vote(pid, "agent_1", True))
        print(value, left, hits, swapped, many, keys, fence, found, n)
        return len(mem)


async def async_user(cfg: MemoryConfig) -> None:
    async with AsyncMemorySystem.open(cfg) as mem:
        await mem.put("agent_1", "position", {"qty": 10})
        print(await mem.get("agent_1", "position"))
        sub = await mem.subscribe("agent_1/updates")
        await mem.publish("agent_1/updates", b"tick")
        print(await sub.recv(timeout=1.0))
        async with mem.lock("book", timeout=datetime.timedelta(seconds=1)) as token:
            print(token.fence)
        print(await mem.incr("ctr", "n"), await mem.ttl("ctr", "n"))
        pid = await mem.consensus.submit_proposal(Proposal("agent_1", None))
        print((await mem.consensus.wait(pid, timeout=0.1)).decided)
        print(await mem.bank.retrieve(np.zeros(128), top_k=1))
        view = mem.namespace("agent_7")
        print(await view.get("pos"), [k async for k in view.scan()])


if __name__ == "__main__":
    asyncio.run(async_user(MemoryConfig()))
