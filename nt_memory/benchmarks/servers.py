"""Peer servers the benchmarks start for themselves: a private ``redis-server`` on a free loopback
port, with no persistence, stopped by its pid when the run ends.

    with redis_server() as port:          # None when redis-server or redis-py is missing
        ...

Where it is missing, :func:`redis_missing` says what to install.
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
