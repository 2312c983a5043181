"""Two memory systems as two hosts, joined through a real nats-server (JetStream) on a free loopback
port: replication both ways by revision, cluster locks, consistent reads, faults and bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from nt_memory import ClusterConfig, ClusterError, LockTimeout, MemoryConfig, MemorySystem, StaleToken
from nt_memory.servers import NatsServer, free_port, nats_cluster, nats_missing
from nt_memory.shm.system import remove_system
from tests.conftest import unique_name

pytestmark = pytest.mark.skipif(nats_missing() is not None, reason=f"cluster tests: {nats_missing()}")
REPLICATION_BOUND_S = 15.0  # generous: the machine is shared; the bench measures the real lag


@pytest.fixture
def server(tmp_path):
    with NatsServer(str(tmp_path / "nats")) as srv:
        yield srv


@pytest.fixture
def hosts(server, tmp_path):
    """Two systems (two "hosts": their own names and storage paths) in one bucket."""
    opened: list[MemorySystem] = []
    bucket = unique_name("b")

    def open_host(tag: str, **cluster) -> MemorySystem:
        name = unique_name(tag)
        cfg = ClusterConfig(url=server.url, bucket=bucket, **cluster)
        mem = MemorySystem.open(MemoryConfig(name=name, storage_path=str(tmp_path / name), cluster=cfg))
        opened.append(mem)
        return mem

    yield open_host
    for mem in opened:
        mem.close()
        remove_system(mem.name)


def eventually(fn, what: str, bound: float = REPLICATION_BOUND_S):
    deadline = time.monotonic() + bound
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {bound:g}s")
        time.sleep(0.01)


def bridged(mem: MemorySystem) -> bool:
    return bool(mem.stats()["cluster"]["this_process_bridges"])


def test_a_put_on_one_host_is_read_on_the_other(hosts):
    a, b = hosts("a"), hosts("b")
    eventually(lambda: bridged(a) and bridged(b), "both bridges running")
    a.put("desk", "pos", {"qty": 10})
    assert eventually(lambda: b.get("desk", "pos") == {"qty": 10}, "A's put on B")
    b.put("desk", "pos", {"qty": 11}, ttl=60)
    assert eventually(lambda: a.get("desk", "pos") == {"qty": 11}, "B's put on A")
    assert 0 < a.ttl("desk", "pos") <= 60  # the data's life travelled with it
    a.delete("desk", "pos")
    assert eventually(lambda: b.get("desk", "pos", "gone") == "gone", "A's delete on B")
    s = b.stats()["cluster"]
    assert s["applied_here"] >= 2 and s["replication_lag_p50_s"] is not None
    # What a host applied from the bucket does not go back out as a new write (no echo).
    a.flush()
    b.flush()
    eventually(lambda: a.stats()["cluster"]["outbox"] == 0 and b.stats()["cluster"]["outbox"] == 0, "outboxes empty")
    published = a.stats()["cluster"]["published_here"] + b.stats()["cluster"]["published_here"]
    assert published == 3


def test_concurrent_writes_converge_to_the_highest_revision(hosts):
    a, b = hosts("a"), hosts("b")
    eventually(lambda: bridged(a) and bridged(b), "both bridges running")

    def writer(mem, tag):
        for i in range(200):
            mem.put("race", "k", f"{tag}{i}")
            mem.put("race", f"{tag}-{i % 7}", i)

    threads = [threading.Thread(target=writer, args=(m, t)) for m, t in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    a.get_consistent("race", "k")  # each host's last write has gone out...
    b.get_consistent("race", "k")
    final = a.get_consistent("race", "k")  # ...so both read the same last revision
    assert final == b.get_consistent("race", "k") and final in ("a199", "b199")
    assert eventually(lambda: a.get("race", "k") == final and b.get("race", "k") == final, "both hosts converged")
    for key in [f"{t}-{i}" for t in "ab" for i in range(7)]:
        assert eventually(lambda key=key: a.get("race", key) == b.get("race", key) is not None, f"{key} on both")


def test_a_consistent_read_sees_this_hosts_write_and_the_bucket(hosts):
    a, b = hosts("a"), hosts("b")
    a.put("ns", "k", b"v1")
    assert a.get_consistent("ns", "k") == b"v1"  # A's own write went out first
    assert b.get_consistent("ns", "k") == b"v1"  # straight from the bucket, whatever B has yet
    assert a.get_consistent("ns", "missing", default=7) == 7


def test_get_consistent_needs_a_cluster(mem):
    with pytest.raises(Exception, match="cluster=ClusterConfig"):
        mem.get_consistent("ns", "k")
    with pytest.raises(Exception, match="cluster=ClusterConfig"):
        mem.acquire_lock("x", scope="cluster")


def test_cluster_lock_fences_grow_across_hosts_and_a_server_restart(hosts, server):
    a, b = hosts("a"), hosts("b")
    fences = []
    for mem in (a, b, a, b):
        token = mem.acquire_lock("book", timeout=5, scope="cluster")
        fences.append(token.fence)
        mem.release_lock(token)
    server.stop()
    server.start()
    for mem in (b, a):
        with mem.lock("book", timeout=30, scope="cluster") as token:
            fences.append(token.fence)
    assert fences == sorted(fences) and len(set(fences)) == len(fences), fences


def test_cluster_lock_excludes_other_hosts_until_its_lease_ends(hosts):
    a, b = hosts("a"), hosts("b")
    token = a.acquire_lock("risk", lease=1.0, scope="cluster")
    with pytest.raises(LockTimeout, match=r"held by .*/" + a.name):
        b.acquire_lock("risk", timeout=0.2, scope="cluster")
    token = a.extend_lock(token, 1.0)  # renewed: still A's
    t0 = time.monotonic()
    taken = b.acquire_lock("risk", timeout=10, scope="cluster")  # A stops renewing: B gets it at lease end
    assert time.monotonic() - t0 > 0.5 and taken.fence > token.fence
    with pytest.raises(StaleToken):
        a.release_lock(token)
    b.release_lock(taken)
    with pytest.raises(StaleToken):
        b.release_lock(taken)


def test_writes_wait_out_a_server_restart(hosts, server):
    a, b = hosts("a"), hosts("b")
    eventually(lambda: bridged(a) and bridged(b), "both bridges running")
    a.put("ns", "before", 1)
    assert eventually(lambda: b.get("ns", "before") == 1, "a put before the restart")
    server.stop()
    for i in range(50):  # acknowledged locally while the server is away
        a.put("ns", f"during{i}", i)
    a.flush()
    assert a.stats()["cluster"]["outbox"] > 0  # waiting, durably, for the bucket
    server.start()
    for i in range(50):
        assert eventually(lambda i=i: b.get("ns", f"during{i}") == i, f"during{i} after the restart")
    assert eventually(lambda: a.stats()["cluster"]["reconnects"] >= 1, "reconnected")


def test_an_unreachable_server_is_a_clear_error_within_its_timeout(tmp_path):
    name = unique_name()
    cfg = ClusterConfig(url=f"nats://127.0.0.1:{free_port()}", connect_timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(
        ClusterError, match=r"cannot reach the cluster at nats://127\.0\.0\.1:\d+ within connect_timeout=0\.5s"
    ):
        MemorySystem.open(MemoryConfig(name=name, storage_path=str(tmp_path), cluster=cfg))
    assert time.monotonic() - t0 < 5
    remove_system(name)


def test_a_bucket_with_foreign_content_is_refused(server, tmp_path):
    import asyncio

    import nats

    async def foreign():
        nc = await nats.connect(server.url)
        kv = await (nc.jetstream()).create_key_value(bucket="theirs")
        await kv.put("orders.1", b"not ours")
        await nc.close()

    asyncio.run(foreign())
    name = unique_name()
    cfg = ClusterConfig(url=server.url, bucket="theirs")
    with pytest.raises(ClusterError, match="'theirs' .* is not an nt-memory bucket"):
        MemorySystem.open(MemoryConfig(name=name, storage_path=str(tmp_path), cluster=cfg))
    remove_system(name)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"url": "http://x"}, "must start with nats://"),
        ({"url": ()}, "cluster url"),
        ({"bucket": "a.b"}, "bucket='a.b'"),
        ({"replicas": 7}, "replicas=7"),
        ({"connect_timeout": 0}, "connect_timeout"),
    ],
)
def test_bad_cluster_settings(kwargs, match):
    from nt_memory import ConfigError

    with pytest.raises(ConfigError, match=match):
        ClusterConfig(**kwargs)


def test_without_a_cluster_nothing_imports_nats(tmp_path):
    code = (
        "import sys; from nt_memory import MemorySystem, MemoryConfig; "
        f"m = MemorySystem.open(MemoryConfig(name={unique_name()!r}, storage_path={str(tmp_path)!r})); "
        "m.put('a', 'b', 1); m.close(); m.unlink(); assert 'nats' not in sys.modules, 'nats imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env=os.environ | {"PYTHONPATH": os.getcwd()})


@pytest.mark.multiprocess
def test_a_stopped_bridge_hands_the_role_to_another_process(server, tmp_path):
    """SIGSTOP the process that bridges host A: another process of A takes the role at lease end
    and A's writes and bridged messages keep reaching host B, each message once and in order; the
    stopped one, resumed, finds it lost the role."""
    import multiprocessing as mp
    import signal

    from tests.cluster import workers

    ctx = mp.get_context("spawn")
    bucket = unique_name("b")
    a_name, b_name = unique_name("a"), unique_name("b")
    a_path, b_path = str(tmp_path / "a"), str(tmp_path / "b")
    ready = ctx.Queue()
    child = ctx.Process(target=workers.bridge_holder, args=(a_name, a_path, server.url, bucket, ready))
    child.start()
    a = b = None
    try:
        assert ready.get(timeout=120) is True
        cluster = ClusterConfig(url=server.url, bucket=bucket, topics=("swarm/",))
        a = MemorySystem.open(MemoryConfig(name=a_name, storage_path=a_path, cluster=cluster))
        b = MemorySystem.open(MemoryConfig(name=b_name, storage_path=b_path, cluster=cluster))
        assert not bridged(a)
        sub = b.subscribe("swarm/t")
        eventually(lambda: bridged(b), "B's bridge")
        time.sleep(0.3)
        for i in range(10):
            a.publish("swarm/t", i)
        a.put("ns", "k", 1)
        assert eventually(lambda: b.get("ns", "k") == 1, "through the child's bridge")
        # Stop it between LMDB transactions: one stopped inside a write transaction holds LMDB's
        # writer mutex, and every writer of the host waits for it (README, Past one host).
        eventually(lambda: a.stats()["cluster"]["outbox"] == 0, "the child's batch done")
        time.sleep(0.3)
        os.kill(child.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        for i in range(10, 20):
            a.publish("swarm/t", i)
        a.put("ns", "k", 2)
        try:
            eventually(lambda: b.get("ns", "k") == 2, "through the new bridge")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: A {a.stats()['cluster']}, journal {a.stats()['journal']}") from None
        took = time.monotonic() - t0
        assert bridged(a) and took < 10, took
        os.kill(child.pid, signal.SIGCONT)
        for i in range(20, 30):
            a.publish("swarm/t", i)
        a.put("ns", "k", 3)
        assert eventually(lambda: b.get("ns", "k") == 3, "after the old bridge resumed")
        assert bridged(a)
        got = [sub.recv(timeout=REPLICATION_BOUND_S) for _ in range(30)]
        assert got == list(range(30)) and sub.recv(timeout=0.5) is None and sub.dropped == 0
    finally:
        os.kill(child.pid, signal.SIGCONT)
        child.kill()
        child.join(10)
        for mem in (a, b):
            if mem is not None:
                mem.close()
        remove_system(a_name)
        remove_system(b_name)


def test_the_asyncio_facade_reaches_the_cluster(hosts):
    import asyncio

    from nt_memory.aio import AsyncMemorySystem

    a, b = AsyncMemorySystem(hosts("a")), AsyncMemorySystem(hosts("b"))

    async def main():
        await a.put("ns", "k", 5)
        assert await a.get_consistent("ns", "k") == 5  # A's write goes out first
        assert await b.get_consistent("ns", "k") == 5
        async with b.lock("res", timeout=5, scope="cluster") as token:
            with pytest.raises(LockTimeout):
                await a.acquire_lock("res", timeout=0.1, scope="cluster")
            token = await b.extend_lock(token, 5)
        return token.fence

    assert asyncio.run(main()) > 0


def test_a_three_node_cluster_loses_nothing_when_a_node_dies(tmp_path):
    """Replicas 3 on three routed nats-servers: SIGKILL one node mid-stream; every acknowledged
    write reaches the bucket and the other host, with no stall past the election."""
    with nats_cluster(str(tmp_path / "nats")) as nodes:
        cfg = ClusterConfig(url=tuple(n.url for n in nodes), bucket=unique_name("b"), replicas=3)
        opened = []
        try:
            for tag in "ab":
                name = unique_name(tag)
                opened.append(
                    MemorySystem.open(MemoryConfig(name=name, storage_path=str(tmp_path / name), cluster=cfg))
                )
            a, b = opened
            for i in range(30):
                a.put("ns", f"k{i}", i)
            assert a.get_consistent("ns", "k29") == 29
            nodes[0].stop(kill=True)
            t0 = time.monotonic()
            for i in range(30, 60):
                a.put("ns", f"k{i}", i)  # acknowledged locally at once, whatever the election
            assert a.get_consistent("ns", "k59", timeout=30) == 59
            stalled = time.monotonic() - t0
            for i in range(60):
                assert eventually(lambda i=i: b.get("ns", f"k{i}") == i, f"k{i} on B", bound=60)
                assert b.get_consistent("ns", f"k{i}", timeout=30) == i
            assert stalled < 30, f"writes waited {stalled:.1f}s for the bucket after the node died"
        finally:
            for mem in opened:
                mem.close()
                remove_system(mem.name)


def test_a_vote_split_across_hosts_decides_once(hosts):
    """Voters on two hosts vote at once on a cluster proposal: every vote counts once, the
    decision is taken once, and both hosts read the same decided result ever after."""
    from nt_memory import ConsensusError, ConsensusStatus, Proposal, Vote

    a, b = hosts("a"), hosts("b")
    voters = [f"v{i}" for i in range(12)]
    for v in voters:
        a.consensus.register_voter(v, 1.0, scope="cluster")
    assert b.consensus.scope_of("cluster-0") is not None
    pid = a.consensus.submit_proposal(Proposal("a", {"rebalance": 1}, quorum=0.75), scope="cluster")
    assert pid.startswith("cluster-")
    results: list = []

    def voting(mem, mine):
        for v in mine:
            results.append(mem.consensus.vote(Vote(pid, v, approve=True)))

    threads = [
        threading.Thread(target=voting, args=(a, voters[0::2])),
        threading.Thread(target=voting, args=(b, voters[1::2])),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    decided = [r for r in results if r.decided]
    first = min(decided, key=lambda r: r.votes)
    assert first.status == ConsensusStatus.APPROVED and first.votes == 9 and first.approve_weight == 9
    assert all(r == first for r in decided)  # a decided result never changes
    assert a.consensus.result(pid) == b.consensus.result(pid) == first
    assert b.consensus.wait(pid, timeout=1) == first
    with pytest.raises(ConsensusError, match="not registered"):
        b.consensus.vote(Vote(pid, "nobody", approve=False))
    pid2 = b.consensus.submit_proposal(Proposal("b", None, quorum=0.5), scope="cluster")
    a.consensus.vote(Vote(pid2, "v0", approve=False))
    with pytest.raises(ConsensusError, match="already voted"):
        b.consensus.vote(Vote(pid2, "v0", approve=True))
    assert b.stats()["cluster"]["consensus"]["votes_counted_here"] >= 6


@pytest.mark.multiprocess
def test_the_cluster_demo_runs_two_hosts_and_cleans_up():
    proc = subprocess.run(
        [sys.executable, "-m", "nt_memory.cli", "demo", "--cluster", "--agents", "2", "--seconds", "3"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    for line in ("agents_finished: 2/2", "final_positions_replicated: 2/2", "(consistent)", "cleaned: yes"):
        assert line in out, out
    names = [part.split("=")[1] for part in out.split("hosts: ")[1].splitlines()[0].split(", ")]
    assert len(names) == 2 and not [f for f in os.listdir("/dev/shm") if any(f".{n}." in f for n in names)]


def test_writes_made_while_the_server_is_away_survive_a_reboot(server, tmp_path):
    """Acknowledged while the server is down, then the host reboots (shared memory wiped, reopened
    from storage_path): the outbox in LMDB still holds them, and they reach the bucket once the
    server is back."""
    bucket = unique_name("b")
    name, path = unique_name("a"), str(tmp_path / "a")
    cfg = MemoryConfig(name=name, storage_path=path, cluster=ClusterConfig(url=server.url, bucket=bucket))
    mem = MemorySystem.open(cfg)
    try:
        eventually(lambda: bridged(mem), "bridge running")
        server.stop()
        for i in range(20):
            mem.put("ns", f"k{i}", i)
        mem.flush()
        assert mem.stats()["cluster"]["outbox"] == 20
    finally:
        mem.close()
        remove_system(name)  # the reboot: shared memory gone, LMDB stays
    server.start()
    mem = MemorySystem.open(cfg)
    other = None
    try:
        eventually(lambda: mem.stats()["cluster"]["outbox"] == 0, "the outbox published after the reboot")
        other_name = unique_name("b")
        other_cfg = MemoryConfig(
            name=other_name, storage_path=str(tmp_path / "b"), cluster=ClusterConfig(url=server.url, bucket=bucket)
        )
        other = MemorySystem.open(other_cfg)
        for i in range(20):
            assert eventually(lambda i=i: other.get("ns", f"k{i}") == i, f"k{i} on the other host")
    finally:
        for m in (mem, other):
            if m is not None:
                m.close()
                remove_system(m.name)


def test_values_nt_memory_did_not_write_are_skipped_not_applied(hosts, server):
    import asyncio

    import nats

    a = hosts("a")
    eventually(lambda: bridged(a), "bridge running")
    bucket = a.config.cluster.bucket
    from nt_memory.cluster.client import VALUE_KEY_PREFIX, encode_key

    async def hostile():
        nc = await nats.connect(server.url)
        kv = await nc.jetstream().key_value(bucket)
        await kv.put(encode_key(VALUE_KEY_PREFIX, b"ns\0k"), b"not an nt-memory value")
        await kv.put(VALUE_KEY_PREFIX + "%%%", b"NTM1 bad key", validate_keys=False)  # not base64: ignored
        await nc.close()

    a.put("ns", "k", 1)
    assert a.get_consistent("ns", "k") == 1
    asyncio.run(hostile())
    assert eventually(lambda: a.stats()["cluster"]["foreign_values"] >= 1, "the foreign value seen")
    assert a.get("ns", "k") == 1  # kept, not misread
    with pytest.raises(ClusterError, match="did not write"):
        a.get_consistent("ns", "k")


def test_a_bridged_topic_reaches_every_host_in_order_with_exact_counts(hosts):
    a, b = hosts("a", topics=("swarm/",)), hosts("b", topics=("swarm/",))
    eventually(lambda: bridged(a) and bridged(b), "both bridges running")
    subs = {"a": a.subscribe("swarm/orders"), "b": b.subscribe("swarm/orders")}
    local = {"a": a.subscribe("desk/private"), "b": b.subscribe("desk/private")}
    time.sleep(0.3)  # both bridges follow the stream
    n = 150
    for i in range(n):
        a.publish("swarm/orders", {"from": "a", "i": i})
        b.publish("swarm/orders", {"from": "b", "i": i})
        a.publish("desk/private", i)  # not under a bridged prefix: stays on A
    for host, sub in subs.items():
        seen = []
        while len(seen) < 2 * n:
            m = sub.recv(timeout=REPLICATION_BOUND_S)
            assert m is not None, f"host {host}: {len(seen)} of {2 * n} messages"
            seen.append(m)
        for origin in "ab":  # each publisher's messages in its order, every one once
            assert [m["i"] for m in seen if m["from"] == origin] == list(range(n)), (host, origin)
        assert sub.received + sub.dropped == 2 * n and sub.dropped == 0
    assert local["a"].received == 0 and [local["a"].recv(timeout=1) for _ in range(n)] == list(range(n))
    assert local["b"].recv(timeout=0.3) is None  # B never sees A's private topic
    s = a.stats()["cluster"]
    assert s["messages_out_here"] == n and s["messages_in_here"] == n


def test_a_lapped_bridge_tells_the_other_hosts_what_it_lost(hosts):
    """A burst that laps the bridge's reader on host A (a 1 MiB ring, 60,000 messages published at
    once): what A's bridge never sent is counted, and B's subscriber counts it dropped, so there
    received + dropped is exactly what A published, and what it received is in A's order."""
    a, b = hosts("a", topics=("swarm/",)), hosts("b", topics=("swarm/",))
    eventually(lambda: bridged(a) and bridged(b), "both bridges running")
    sub = b.subscribe("swarm/burst")
    time.sleep(0.3)
    n = 60_000
    for i in range(n):
        a.publish("swarm/burst", i)
    seen = []
    deadline = time.monotonic() + 60
    while sub.received + sub.dropped < n and time.monotonic() < deadline:
        m = sub.recv(timeout=1)
        if m is not None:
            seen.append(m)
    lost = a.stats()["cluster"]["messages_lost_here"]
    assert lost > 0, "the burst did not lap the bridge: the test proves nothing"
    assert sub.received + sub.dropped == n, (sub.received, sub.dropped, lost)
    assert seen == sorted(seen) and len(set(seen)) == len(seen) and sub.dropped >= lost
    assert sub.recv(timeout=0.5) is None
