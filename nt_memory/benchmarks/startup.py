"""How long the observer commands take, start to exit, beside the interpreter's own start.

    nt-memory bench startup [--quick] [--runs 9] [--json PATH]

``ls``, ``inspect``, ``inspect --json`` and ``top --once`` each run as a fresh process (``python -m
nt_memory.cli``, warm disk cache) against a system with every part (L1 entries, an embedding, a
topic with a subscriber, a held lock), ``--runs`` times; the report prints the median and the
slowest run beside ``python -c pass`` and ``python -c "import numba"`` (what an observer would
pay if it loaded the kernels), and whether each command runs in an interpreter where importing
numba fails (the observers read shared words only: kernels/layout, kernels.lazy). ``top --once``
includes the 0.5 s over which it measures its rates.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import tempfile
import time

import numpy as np

from nt_memory import MemoryConfig, MemorySystem
from nt_memory.benchmarks import finish, suite_parser

_WITHOUT_NUMBA = (
    "import sys\n"
    "sys.modules['numba'] = None  # an import of numba now raises ImportError\n"
    "from nt_memory.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _seconds(argv: list[str], runs: int) -> dict:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, timeout=120)
        times.append(time.perf_counter() - t0)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return {"median_s": float(np.median(times)), "max_s": max(times), "runs": runs}


def run(runs: int = 9) -> dict:
    name = f"st{secrets.token_hex(3)}"
    py = sys.executable
    r: dict = {"peers": {}, "commands": {}}
    r["peers"]["python -c pass"] = _seconds([py, "-c", "pass"], runs)
    r["peers"]["python -c 'import numba'"] = _seconds([py, "-c", "import numba"], runs)
    with tempfile.TemporaryDirectory(prefix="nt-memory-startup-") as root:
        mem = MemorySystem.open(MemoryConfig(name=name, storage_path=root, embedding_dim=8), label="bench-startup")
        try:
            for i in range(100):
                mem.put("ns", f"k{i}", b"v" * 64)
            mem.put("docs", "d", 1, embedding=np.ones(8))
            mem.subscribe("ticks")
            mem.publish("ticks", 1)
            token = mem.acquire_lock("book")
            for label, args in (
                ("ls", ["ls"]),
                ("inspect", ["inspect", name]),
                ("inspect --json", ["inspect", name, "--json"]),
                ("top --once", ["top", "--once", name]),
            ):
                row = _seconds([py, "-m", "nt_memory.cli", *args], runs)
                alone = subprocess.run([py, "-c", _WITHOUT_NUMBA, *args], capture_output=True, timeout=120)
                row["runs_without_numba"] = alone.returncode == 0
                r["commands"][label] = row
            mem.release_lock(token)
        finally:
            mem.close()
            mem.unlink()
    return r


def report(r: dict) -> str:
    lines = ["observer commands, start to exit (fresh process each run, warm disk cache; top --once"]
    lines[0] += " includes the 0.5 s over which it measures rates)"
    lines.append(f"{'command':28} {'median s':>9} {'slowest s':>10}  without numba")
    for label, row in r["commands"].items():
        ok = "runs" if row["runs_without_numba"] else "FAILS (imports numba)"
        lines.append(f"nt-memory {label:18} {row['median_s']:9.3f} {row['max_s']:10.3f}  {ok}")
    for label, row in r["peers"].items():
        lines.append(f"{label:28} {row['median_s']:9.3f} {row['max_s']:10.3f}  (peer)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = suite_parser("startup", __doc__, "3 runs per command instead of --runs")
    ap.add_argument("--runs", type=int, default=9, help="runs per command (default 9)")
    a = ap.parse_args(argv)
    r = run(3 if a.quick else a.runs)
    return finish(r, report(r), a.json)


if __name__ == "__main__":
    raise SystemExit(main())
