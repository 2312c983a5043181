"""Child processes for the cluster tests (importable by the spawn start method)."""

from __future__ import annotations

import time

from nt_memory import ClusterConfig, MemoryConfig, MemorySystem


def bridge_holder(name: str, path: str, url: str, bucket: str, ready) -> None:
    """Open a system in a cluster, report once this process holds the bridge role, then idle."""
    cluster = ClusterConfig(url=url, bucket=bucket, topics=("swarm/",))
    mem = MemorySystem.open(MemoryConfig(name=name, storage_path=path, cluster=cluster))
    deadline = time.monotonic() + 30
    while not mem.stats()["cluster"]["this_process_bridges"] and time.monotonic() < deadline:
        time.sleep(0.01)
    ready.put(mem.stats()["cluster"]["this_process_bridges"])
    while True:
        time.sleep(1)
