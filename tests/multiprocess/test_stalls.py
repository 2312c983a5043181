"""A stopped (SIGSTOP) holder of any internal lock wedges nobody: every operation that needs the
lock ends, within the stall bound, in a LockTimeout that names the holder's pid and says it is
stopped; operations that do not need it go on. (The first version timed publishers out after 10 s
and let subscribe() spin forever.)"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import numpy as np
import pytest

from nt_memory import MemoryConfig, MemorySystem, Proposal
from nt_memory.errors import LockTimeout
from nt_memory.shm import owned
from nt_memory.shm.system import remove_system
from tests.multiprocess import coord_workers

pytestmark = pytest.mark.multiprocess
CTX = mp.get_context("spawn")


def test_a_stopped_holder_is_reported_not_waited_for(name, tmp_path, monkeypatch):
    monkeypatch.setattr(owned, "STALL_TIMEOUT_S", 0.5)  # the bound every wait below uses
    path = str(tmp_path)
    parent, child = CTX.Pipe()
    p = CTX.Process(target=coord_workers.hold_everything_and_stop, args=(name, path, child))
    p.start()
    try:
        assert parent.poll(120) and parent.recv() == ("holding", True)
        deadline = time.monotonic() + 10
        while not _stopped(p.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        with MemorySystem.open(MemoryConfig(name=name, storage_path=path, embedding_dim=4)) as mem:
            mem.journal.stop()  # the operations below are the only ones that touch the system
            blocked = {
                "publish": lambda: mem.publish("t/x", {"a": 1}),
                "subscribe": lambda: mem.subscribe("t/x"),
                "a new topic": lambda: mem.subscribe("t/new"),
                "a put on the held stripe": lambda: mem.put("ns", "stuck", 1),
                "any journaled put": lambda: mem.put("ns", "other", 1),
                "an embedding put": lambda: mem.put("vec", "w", 1, embedding=np.ones(4)),
                "a new lock name": lambda: mem.acquire_lock("brand-new", timeout=30),
                "consensus": lambda: mem.consensus.submit_proposal(Proposal("a", None)),
            }
            for what, op in blocked.items():
                t0 = time.monotonic()
                with pytest.raises(LockTimeout) as err:
                    op()
                took = time.monotonic() - t0
                assert f"pid {p.pid} (stopped)" in str(err.value), (what, str(err.value))
                assert took < owned.STALL_TIMEOUT_S * 5, f"{what} took {took:.1f}s to report the stall"
            # What needs none of the held words still works: reads, and searches of what is there.
            assert mem.get("vec", "v") == 1
            assert [h.key for h in mem.search_similar("vec", np.ones(4), top_k=1)] == ["v"]
            mem.unlink()
    finally:
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
            os.kill(p.pid, signal.SIGCONT)
        p.join(10)
        remove_system(name)


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(") ", 1)[1][0] == "T"
