import os
import subprocess
import sys

import pytest

from nt_memory.cli import main
from nt_memory.tiers.l1 import HotCache


def test_ls_inspect_gc(name, capsys):
    cache = HotCache.create(name, max_entries=100, label="cli-test")
    try:
        cache.put("ns", "k", b"v")
        assert main(["ls"]) == 0
        out = capsys.readouterr().out
        assert name in out and str(os.getpid()) in out
        assert main(["inspect", name]) == 0
        out = capsys.readouterr().out
        assert "l1_entries: 1 / 100" in out and "label=cli-test alive" in out
        main(["gc"])
        out = capsys.readouterr().out
        assert f"removed: {name}" not in out and f"kept: {name}  (live members: pids {os.getpid()})" in out
    finally:
        cache.close()
    assert main(["gc", "--dry-run", name]) == 0
    assert f"would remove: {name}" in capsys.readouterr().out
    assert main(["gc", "t-no-match-*"]) == 0
    assert "nothing to remove" in capsys.readouterr().out
    assert main(["gc", name]) == 0
    assert f"removed: {name}" in capsys.readouterr().out


def test_inspect_missing_is_one_line_and_nonzero(capsys):
    assert main(["inspect", "t-no-such-system"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no nt-memory system" in err


@pytest.mark.multiprocess
def test_demo_runs_and_cleans_up(name):
    proc = subprocess.run(
        [sys.executable, "-m", "nt_memory.cli", "demo", "--agents", "2", "--seconds", "3", "--name", name],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for line in (
        "agents_finished: 2/2",
        "dropped: 0",
        "restart_recovered: 2/2",
        "reboot_recovered: 2/2",
        "cleaned: yes",
    ):
        assert line in out, out
    for key in (
        "l1_get_p99_ns:",
        "njit_lookup_p99_ns:",
        "pubsub_latency_p99_us:",
        "patterns_learned:",
        "proposals_decided:",
    ):
        assert key in out
    assert int(out.split("\ntrajectories: ")[1].split()[0]) > 0
    assert not any(f.startswith(f"ntm.{name}.") for f in os.listdir("/dev/shm"))
    # Progress: a timed line for every phase, in order, and each agent attaching.
    progress = [line for line in out.splitlines() if line.startswith("[")]
    phases = ["loading kernels", "starting 2 agent processes", "market:", "restart:", "ReasoningBank:", "reboot:"]
    found = [next(i for i, line in enumerate(progress) if phase in line) for phase in phases]
    assert found == sorted(found), progress
    assert sum("attached to" in line for line in progress) == 2, progress
    assert all(line[1:].split("s]")[0].strip().replace(".", "").isdigit() for line in progress), progress
    # Context for a reader: the machine, and each latency beside its seed target with a verdict.
    assert f"cores: {len(os.sched_getaffinity(0))}" in out and "processes: 4" in out
    for key in ("njit_lookup_p99_ns:", "l1_get_p99_ns:", "pubsub_latency_p99_us:", "retrieve_p95_us:"):
        line = next(line for line in out.splitlines() if line.startswith(key))
        assert "seed target" in line and ("met" in line or "MISSED" in line), line
    if len(os.sched_getaffinity(0)) < 4:
        assert "hint: 4 busy processes share" in out


def _demo(name: str, agents: int, seconds: float) -> subprocess.Popen:
    """The demo in a process of its own, its output (stderr too) read line by line."""
    return subprocess.Popen(
        [sys.executable, "-m", "nt_memory.cli", "demo", "--agents", str(agents), "--seconds", str(seconds)]
        + ["--name", name],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.multiprocess
def test_demo_survives_an_agent_killed_mid_run(name):
    import signal
    import time

    proc = _demo(name, agents=3, seconds=5)
    lines = []
    victim = None
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("agent_1_pid:"):
                victim = int(line.split(":")[1])
            if line.startswith("agents:"):
                time.sleep(1.5)
                os.kill(victim, signal.SIGKILL)
                break
        rest, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(lines) + rest
    assert proc.returncode == 0, out
    assert "agents_finished: 2/3" in out and "dropped: 0" in out and "cleaned: yes" in out
    assert not any(f.startswith(f"ntm.{name}.") for f in os.listdir("/dev/shm"))


@pytest.mark.multiprocess
def test_ctrl_c_stops_the_demo_cleanly(name):
    """Ctrl-C while the market runs: everything cleaned up, said so, exit 130, no error line."""
    import signal

    proc = _demo(name, agents=2, seconds=60)
    lines = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("agents:"):  # the agents are attached and the market runs
                proc.send_signal(signal.SIGINT)
                break
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    out = "".join(lines) + rest
    assert proc.returncode == 130, out
    assert "interrupted: yes (cleaned: yes)" in out and "error" not in out.lower(), out
    assert not any(f.startswith(f"ntm.{name}.") for f in os.listdir("/dev/shm"))


def test_reindex_after_reboot(name, tmp_path, capsys):
    import numpy as np

    from nt_memory import MemoryConfig, MemorySystem

    cfg = MemoryConfig(name=name, storage_path=str(tmp_path), embedding_dim=8)
    vecs = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    with MemorySystem.open(cfg) as mem:
        for i, v in enumerate(vecs):
            mem.put("docs", f"d{i}", i, embedding=v)
        mem.flush()
        mem.unlink()  # a reboot: the embedding log is gone, L3 keeps the vectors
    assert main(["reindex", name, "--path", str(tmp_path), "--dim", "8"]) == 0
    assert "reindexed: 50 embeddings" in capsys.readouterr().out
    with MemorySystem.open(cfg) as mem:
        assert mem.search_similar("docs", vecs[7], top_k=1)[0].key == "d7"
        mem.unlink()


def _bench_quick(tmp_path, run: int, plot: bool) -> tuple[dict, str]:
    import json

    out = tmp_path / f"bench{run}.json"
    cmd = [sys.executable, "-m", "nt_memory.cli", "bench", "--quick", "--json", str(out)]
    if plot:
        cmd += ["--plot", str(tmp_path / "bench.png")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(out.read_text()), proc.stdout


@pytest.mark.multiprocess
def test_bench_quick_json_has_every_target_row(tmp_path):
    """Two quick runs: every seed row has a verdict, its target, and figures measured in that run
    (they differ between the runs); every peer was measured, or says why not; --plot writes a PNG."""
    import importlib.util
    import shutil

    plot = importlib.util.find_spec("matplotlib") is not None
    first, _ = _bench_quick(tmp_path, 1, plot=False)
    second, stdout = _bench_quick(tmp_path, 2, plot=plot)
    rows = ("l1_get", "position_lookup_njit", "vector_search", "memory_footprint", "cross_agent_pubsub")
    for data in (first, second):
        for row in rows:
            assert data[row]["verdict"] in ("PASS", "MISS")
            assert data[row]["target"]["value"] > 0
        assert data["cross_agent_pubsub"]["ours"]["dropped"] == 0
    for row in rows:
        assert first[row]["ours"] != second[row]["ours"], row
    redis_here = shutil.which("redis-server") is not None and importlib.util.find_spec("redis") is not None
    peers = [("l1_get", "redis_get"), ("l1_get", "ultradict_get"), ("cross_agent_pubsub", "redis_pubsub")]
    for row, peer in peers + [("cross_agent_pubsub", "posix_mq")]:
        v = second[row][peer]
        assert isinstance(v, dict) and v["p50"] > 0 or isinstance(v, str) and v.startswith("not measured:"), (peer, v)
    assert isinstance(second["l1_get"]["redis_get"], dict) == redis_here
    assert isinstance(second["l1_get"]["put"]["redis_set"], dict) == redis_here
    # The footprint is what was measured: the fixed part and the per-observation part add up to
    # the segments and RSS growth found at n.
    m = second["memory_footprint"]
    parts = m["parts_bytes"]
    at_n = sum(v for k, v in parts.items() if k not in ("anon_growth", "fixed")) + parts["anon_growth"]
    assert abs(parts["fixed"] + m["ours"]["bytes_per_obs"] * m["measured_at"] - at_n) < 1e-6 * at_n + 1
    assert "L1 cache lookup" in stdout
    if plot:
        png = (tmp_path / "bench.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


@pytest.mark.multiprocess
def test_bench_vectors_measures_every_process_and_segment(tmp_path):
    """A small run of the footprint/search suite: real processes, real figures (no timing asserted)."""
    import json

    out = tmp_path / "vectors.json"
    proc = subprocess.run(
        [sys.executable, "-m", "nt_memory.benchmarks.vectors", "--n", "3000", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["n"] == 3000 and r["writer"]["put"]["n"] == 3000
    assert r["shm_bytes_by_part"]["embed"] > 3000 * 128 * 4  # every vector is in the log
    for who in ("writer_after_flush", "searcher_memory", "searcher2_memory", "idle_member_memory"):
        assert r[who]["anon_bytes"] > 0
    assert r["writer_after_flush"]["lmdb_file_bytes"] > 0
    s = r["search"]
    assert s["ours"]["n"] == s["raw_hnswlib"]["n"] == 300
    assert s["ours"]["recall_at_10"] >= 0.95 and s["raw_hnswlib"]["recall_at_10"] >= 0.95
    assert "bytes / observation" in proc.stdout and "raw_hnswlib" in proc.stdout


def test_bench_startup_times_every_observer_without_numba(tmp_path):
    """``nt-memory bench startup``: each observer command really runs (and runs where importing
    numba fails), and each row carries its measured runs (no timing asserted)."""
    import json

    out = tmp_path / "startup.json"
    proc = subprocess.run(
        [sys.executable, "-m", "nt_memory.cli", "bench", "startup", "--runs", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    r = json.loads(out.read_text())
    assert set(r["commands"]) == {"ls", "inspect", "inspect --json", "top --once"}
    for row in r["commands"].values():
        assert row["runs"] == 1 and row["median_s"] > 0 and row["runs_without_numba"]
    assert set(r["peers"]) == {"python -c pass", "python -c 'import numba'"}


def test_top_renders_a_frame_of_a_live_system(name, tmp_path):
    """``top --once`` at 80x24 with more topics, locks and proposals than fit: 24 lines at most,
    none wider than 80, every table's title and header, and a count of the rows left out;
    ``--json`` gives every row."""
    import json

    from nt_memory import MemoryConfig, MemorySystem, Proposal

    env = dict(os.environ, COLUMNS="80", LINES="24")
    top = [sys.executable, "-m", "nt_memory.cli", "top", name]
    with MemorySystem.open(MemoryConfig(name=name, storage_path=str(tmp_path))) as mem:
        mem.put("a", "b", 1)
        behind = mem.subscribe("ticks/0")
        for i in range(12):
            mem.publish(f"ticks/{i}", {"px": i})
        mem.publish("ticks/0", {"px": -1})
        tokens = [mem.acquire_lock(f"positions{i}") for i in range(10)]
        mem.consensus.register_voter("agent_1")
        for i in range(6):
            mem.consensus.submit_proposal(Proposal("agent_1", {"action": "rebalance", "i": i}))
        proc = subprocess.run(top + ["--once"], capture_output=True, text=True, timeout=120, env=env)
        as_json = subprocess.run(top + ["--json"], capture_output=True, text=True, timeout=120, env=env)
        for token in tokens:
            mem.release_lock(token)
        mem.unlink()
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.rstrip("\n").splitlines()
    assert len(lines) <= 24 and max(len(line) for line in lines) <= 80, proc.stdout
    assert lines[0].startswith(f"nt-memory top: {name}")
    for part in ("members", "L1", "journal", "topics", "ticks/0", "locks (10 held", "positions", "open proposals"):
        assert part in proc.stdout, proc.stdout
    assert "more (nt-memory inspect" in proc.stdout
    snap = json.loads(as_json.stdout)
    assert len(snap["topics"]) == 12 and snap["locks"]["held"] == 10 and len(snap["consensus"]["open"]) == 6
    assert snap["l1"]["entries"] == 1 and snap["members"][0]["alive"]
    assert [(x["topic"], x["lag"], x["pid"]) for x in snap["subscribers"]] == [("ticks/0", 2, os.getpid())]
    assert "subscribers (1;" in proc.stdout and behind.received == 0


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_top_quits_on_q(name):
    """Interactive ``top`` in a terminal: a frame appears, and ``q`` ends it with code 0."""
    import select
    import time

    cache = HotCache.create(name, max_entries=100)
    leader, follower = os.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nt_memory.cli", "top", name, "--interval", "0.2"],
            stdin=follower,
            stdout=follower,
            stderr=follower,
            env=dict(os.environ, COLUMNS="80", LINES="24"),
        )
        seen = b""
        deadline = time.monotonic() + 60
        while b"(q quits)" not in seen and time.monotonic() < deadline:
            if select.select([leader], [], [], 0.5)[0]:
                seen += os.read(leader, 65536)
        assert b"(q quits)" in seen, seen
        os.write(leader, b"q")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(leader)
        os.close(follower)
        cache.close()


def test_top_of_a_missing_system_is_one_line(capsys):
    assert main(["top", "t-no-such-system", "--once"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1


def test_version_and_exit_codes_in_help(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("nt-memory ")
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "exit codes: 0 success, 1 error, 2 usage error" in capsys.readouterr().out


def test_ls_and_inspect_print_json(name, capsys):
    import json

    cache = HotCache.create(name, max_entries=100, label="cli-json")
    try:
        cache.put("ns", "k", b"v")
        assert main(["ls", "--json"]) == 0
        systems = {s["name"]: s for s in json.loads(capsys.readouterr().out)}
        mine = systems[name]
        assert mine["ok"] and mine["bytes"] > 0
        assert [(m["pid"], m["label"], m["alive"]) for m in mine["members"]] == [(os.getpid(), "cli-json", True)]
        assert main(["inspect", name, "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["system"] == name and report["parts"]["l1"]["entries"] == 1
        assert f"ntm.{name}.l1" in report["segments"]
    finally:
        cache.close()
        cache.unlink()


def test_a_closed_pipe_ends_quietly(name):
    """``nt-memory inspect NAME | head`` with the reader gone before anything is written."""
    cache = HotCache.create(name, max_entries=100)
    try:
        read_end, write_end = os.pipe()
        os.close(read_end)  # every write to the pipe fails with EPIPE
        proc = subprocess.run(
            [sys.executable, "-m", "nt_memory.cli", "inspect", name],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
        os.close(write_end)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    finally:
        cache.close()
        cache.unlink()


@pytest.fixture
def every_part(name, tmp_path):
    """The name of a live system with every part in use: L1 entries, an embedding, a topic with a
    subscriber and a message, a held lock (what the observer commands must read)."""
    import numpy as np

    from nt_memory import MemoryConfig, MemorySystem

    with MemorySystem.open(MemoryConfig(name=name, storage_path=str(tmp_path), embedding_dim=8)) as mem:
        mem.put("ns", "k", b"v")
        mem.put("docs", "d", 1, embedding=np.ones(8))
        mem.subscribe("ticks")
        mem.publish("ticks", 1)
        token = mem.acquire_lock("book")
        yield name
        mem.release_lock(token)
        mem.unlink()


def test_import_ls_and_inspect_load_no_compiled_kernel(every_part):
    """``import nt_memory`` imports no submodule until a name is used (PEP 562), and ``ls`` and
    ``inspect`` load no numba-compiled function (the first one a process loads costs about half a
    second); an observer's L1 view binds its get and put only when asked to read."""
    name = every_part
    code = (
        "import sys, nt_memory\n"
        "assert 'numba' not in sys.modules and 'nt_memory.memory' not in sys.modules\n"
        "from nt_memory import MemorySystem, NtMemoryError\n"
        "assert MemorySystem.__module__ == 'nt_memory.memory' and 'Hit' in dir(nt_memory)\n"
        "from nt_memory.cli import main\n"
        "from numba.core import dispatcher\n"
        "loads = []\n"
        "original = dispatcher.Dispatcher.compile\n"
        "dispatcher.Dispatcher.compile = lambda self, sig: loads.append(self.py_func.__name__) or original(self, sig)\n"
        f"for argv in (['ls'], ['inspect', {name!r}], ['inspect', {name!r}, '--json']):\n"
        "    assert main(argv) == 0 and loads == [], (argv, loads)\n"
        "from nt_memory.memory import observe\n"
        f"with observe({name!r}) as (_, parts):\n"
        "    l1 = parts['l1']\n"
        "    assert '_k_get' not in l1.__dict__ and l1.get('ns', 'k') == b'v' and '_k_get' in l1.__dict__\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def _cli_without_numba(argv: list[str]) -> subprocess.CompletedProcess:
    """``nt-memory ARGV`` in a fresh interpreter where importing numba fails."""
    code = (
        "import sys\n"
        "sys.modules['numba'] = None  # an import of numba now raises ImportError\n"
        "from nt_memory.cli import main\n"
        f"sys.exit(main({argv!r}))\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_ls_inspect_and_top_never_import_numba(every_part):
    """``ls``, ``inspect`` and ``top`` read shared words only: their path imports the kernels' constants
    (kernels/layout) and reaches kernels through ``kernels.lazy`` and ``Compiled``, so numba
    (~150 ms warm, seconds cold) is never imported, with every part of a system present."""
    name = every_part
    observers = (["ls"], ["ls", "--json"], ["inspect", name], ["inspect", name, "--json"], ["top", "--once", name])
    for argv in observers:
        done = _cli_without_numba(argv)
        assert done.returncode == 0, (argv, done.stderr)
        assert name in done.stdout
    inspected = _cli_without_numba(["inspect", name]).stdout
    assert "l1_entries: 2 / " in inspected and "topic: ticks  messages=1" in inspected
    assert "locks: 1 held of 1 named" in inspected
