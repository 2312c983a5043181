"""Servers nt-memory starts for itself, each on a free loopback port and stopped by its pid: a
private ``redis-server`` (no persistence) for the benchmarks' Redis rows, and ``nats-server`` with
JetStream (one node, or a routed cluster of them) for the cluster tests, the cluster bench and
``nt-memory demo --cluster``.

    with redis_server() as port:          # None when redis-server or redis-py is missing
        ...
    with NatsServer("./nats-store") as server:
        ... server.url ...

Where one is missing, :func:`redis_missing` / :func:`nats_missing` say what to install.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_missing() -> str | None:
    """Why Redis cannot be measured here, or None when it can."""
    if shutil.which("redis-server") is None:
        return "not measured: no redis-server on PATH (apt-get install redis-server)"
    try:
        import redis  # noqa: F401
    except ImportError:
        return "not measured: redis-py is missing (pip install 'nt-memory[bench]')"
    return None


@contextlib.contextmanager
def redis_server(timeout: float = 10.0) -> Iterator[int | None]:
    """Start ``redis-server`` on a free loopback port (no RDB, no AOF) and yield the port; stop it
    by pid afterwards. Yields None when :func:`redis_missing`."""
    if redis_missing():
        yield None
        return
    import redis

    port = free_port()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(cmd + ["--daemonize", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                redis.Redis(port=port, socket_connect_timeout=0.5).ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {port} (exit {proc.poll()})") from None
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def nats_missing() -> str | None:
    """Why a NATS cluster cannot be run here, or None when it can."""
    if shutil.which("nats-server") is None:
        return "no nats-server on PATH (apt-get install nats-server)"
    try:
        import nats  # noqa: F401
    except ImportError:
        return "nats-py is missing (pip install 'nt-memory[cluster]')"
    return None


class NatsServer:
    """A private ``nats-server`` with JetStream on a free loopback port, its storage in ``store_dir``;
    stopped (or killed) by its pid, and started again on the same port and storage. With
    ``routes`` (the cluster ports of the other nodes) it is one node of a cluster named ``cluster``."""

    def __init__(self, store_dir: str, name: str = "n1", cluster_port: int = 0, routes: tuple[int, ...] = ()):
        self.store_dir = store_dir
        self.name = name
        self.port = free_port()
        self.cluster_port = cluster_port
        self.routes = routes
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> NatsServer:
        cmd = ["nats-server", "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", self.store_dir, "-n", self.name]
        if self.cluster_port:
            cmd += ["--cluster_name", "cluster", "--cluster", f"nats://127.0.0.1:{self.cluster_port}"]
            cmd += ["--routes", ",".join(f"nats://127.0.0.1:{p}" for p in self.routes)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.5) as s:
                    if s.recv(4).startswith(b"INFO"):
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not start on port {self.port} (exit {self.proc.poll()})")
            time.sleep(0.05)

    def stop(self, kill: bool = False) -> None:
        """Stop the server by its pid (SIGTERM, or SIGKILL with ``kill``); its storage stays."""
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def nats_cluster(store_dir: str, nodes: int = 3, timeout: float = 30.0) -> Iterator[list[NatsServer]]:
    """``nodes`` nats-servers with JetStream, routed into one cluster on loopback (each with its own
    storage under ``store_dir``), once JetStream answers with a leader; stopped by pid afterwards."""
    import asyncio
    import os

    cluster_ports = [free_port() for _ in range(nodes)]
    servers = [
        NatsServer(os.path.join(store_dir, f"n{i}"), f"n{i}", cluster_ports[i], tuple(cluster_ports))
        for i in range(nodes)
    ]
    try:
        for srv in servers:
            srv.start()
        asyncio.run(_wait_for_jetstream([srv.url for srv in servers], timeout))
        yield servers
    finally:
        for srv in servers:
            srv.stop()


async def _wait_for_jetstream(urls: list[str], timeout: float) -> None:
    """Until the cluster's JetStream has a meta leader (account info answers)."""
    import asyncio

    import nats

    nc = await nats.connect(servers=urls, connect_timeout=2)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                await nc.jetstream().account_info()
                return
            except Exception:  # noqa: BLE001 - not ready: no leader elected yet
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
    finally:
        await nc.close()
