"""Where a hot call's instructions go, by function, numba's kernels included: callgrind's counts
for each instruction, attributed to the symbols of the JIT code.

    python -m nt_memory.benchmarks.kernel_profile put_many [--keys 5000] [--annotate table::table_put]
    python -m bench.kernel_profile put_many          # the same, from a checkout

Cases: ``put_many`` / ``get_many`` (batches of 100 keys) and ``put`` / ``get`` (a Python loop of
single calls over the same keys), on a MemorySystem of 20,000 keys in random order.

Callgrind sees numba's JIT code as anonymous addresses. So the kernels are first compiled natively
into a fresh cache of their own, for the fixed CPU model ``nt-memory bench instructions`` uses
(valgrind emulates it), and the object file of every compiled library is saved. Then the case runs
under ``valgrind --tool=callgrind --dump-instr=yes``, loading that cache, and the worker reports
where each library's entry symbol was loaded. Every counted address then maps to a symbol and an
offset in an object file: the report prints instructions per key by function (the C and Python
functions callgrind names itself among them) and, with ``--annotate``, one function's machine code
(``objdump -d``) with each instruction's count per key. A development tool: it needs valgrind and
binutils, and takes about a minute and a half.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import gc
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from nt_memory.benchmarks import BATCH, batch_calls
from nt_memory.benchmarks.instructions import CPU_FEATURES, CPU_NAME

CASES = ("put_many", "put", "get_many", "get")
KEYS = 20_000


def _libraries() -> dict[str, object]:
    """Every compiled numba library in this process: a dispatcher's overloads by their symbol,
    a C entry's (``numba.cfunc``) by ``cfunc:`` and its function's name."""
    from numba.core.registry import CPUDispatcher

    from nt_memory.kernels._jit import CEntry

    libs: dict[str, object] = {}
    for o in gc.get_objects():
        if isinstance(o, CPUDispatcher):
            for cres in o.overloads.values():
                libs[cres.fndesc.llvm_func_name] = cres.library  # type: ignore[attr-defined]
        elif isinstance(o, CEntry) and o._compiled is not None:
            libs["cfunc:" + o.pyfunc.__name__] = o._compiled._library
    return libs


def _symbols(obj_path: str) -> dict[str, tuple[int, int]]:
    """Defined code symbols of an object file: name -> (offset, size)."""
    out = subprocess.run(["nm", "-S", "--defined-only", obj_path], capture_output=True, text=True, check=True)
    syms = {}
    for line in out.stdout.splitlines():
        p = line.split()
        if len(p) == 4 and p[2] in ("T", "W", "t"):
            syms[p[3]] = (int(p[0], 16), int(p[1], 16))
    return syms


def _entry_symbol(name: str, obj_path: str) -> str:
    return next(s for s in _symbols(obj_path) if s.startswith("cfunc.")) if name.startswith("cfunc:") else name


def worker(case: str, phase: str, work: str, nkeys: int) -> None:
    """``objects``: run the case once natively, then save every library's object file. ``profile``:
    report where each library's entry was loaded, then run the case between two dumps."""
    import numpy as np

    from nt_memory import CacheConfig, MemoryConfig, MemorySystem

    store = tempfile.mkdtemp(prefix="nt-memory-profile-")
    mem = MemorySystem.open(
        MemoryConfig(
            name=f"kp{os.getpid()}", storage_path=store, cache_config=CacheConfig(max_entries=4 * KEYS, ttl=None)
        ),
        label="kernel-profile",
    )
    try:
        value = bytes(range(64))
        keys = [f"key{i}" for i in range(KEYS)]
        for k in keys:
            mem.put("b", k, value)
        mem.flush()
        order = [keys[i] for i in np.random.default_rng(1).permutation(KEYS)[:nkeys]]
        gets, puts, get_loop, put_loop = batch_calls(mem, "b", order, value)
        calls: dict[str, tuple[Callable[..., Any], list]] = {
            "put_many": (mem.put_many, puts),
            "put": (put_loop, puts),
            "get_many": (mem.get_many, gets),
        }
        fn, args = calls.get(case, (get_loop, gets))

        def run() -> None:
            for a in args:
                fn(*a)

        run()  # compiles (natively) or loads, and warms
        mem.flush()
        libs = _libraries()
        if phase == "objects":
            index = {}
            for i, (name, lib) in enumerate(libs.items()):
                try:
                    obj = lib._get_compiled_object()  # type: ignore[attr-defined]
                except RuntimeError:
                    continue  # loaded from a cache this run did not fill: no object kept
                path = os.path.join(work, f"lib{i}.o")
                with open(path, "wb") as objf:
                    objf.write(obj)
                index[name] = path
            with open(os.path.join(work, "index.json"), "w") as f:
                json.dump(index, f)
            return
        with open(os.path.join(work, "index.json")) as f:
            index = json.load(f)
        anchors = {}
        for name, lib in libs.items():
            if name in index:
                sym = _entry_symbol(name, index[name])
                anchors[name] = (sym, lib.get_pointer_to_function(sym))  # type: ignore[attr-defined]
        with open(os.path.join(work, "anchors.json"), "w") as f:
            json.dump(anchors, f)
        os.getppid()  # callgrind dumps here (--dump-before=getppid)
        run()
        os.getppid()
    finally:
        mem.close()
        mem.unlink()
        shutil.rmtree(store, ignore_errors=True)


def _counts(dump: str) -> tuple[collections.Counter, dict[int, str]]:
    """Self instructions per address from a callgrind dump written with ``--dump-instr=yes``, and
    the function callgrind named for each address. Names defined in the run's other dumps count
    too (callgrind compresses them across a run's files)."""
    names: dict[str, str] = {}
    for path in glob.glob(dump.rsplit(".", 1)[0] + ".*"):
        with open(path, errors="replace") as f:
            for line in f:
                m = re.match(r"c?fn=\((\d+)\) (.*)", line)
                if m:
                    names.setdefault(m.group(1), m.group(2))
    costs: collections.Counter = collections.Counter()
    fn_at: dict[int, str] = {}
    fn, addr, after_call = "?", 0, False
    with open(dump) as f:
        for line in f:
            if line.startswith("fn="):
                m = re.match(r"fn=\((\d+)\)", line)
                fn = names.get(m.group(1), "?") if m else "?"
            elif line.startswith("calls="):
                after_call = True  # the next cost line is the call's inclusive cost, not ours
            elif line[:1] in "0123456789+-*":
                parts = line.split()
                a = parts[0]
                addr = addr if a == "*" else addr + int(a, 0) if a[0] in "+-" else int(a, 16)
                if after_call:
                    after_call = False
                elif len(parts) >= 3:  # positions: instr line, then Ir
                    costs[addr] += int(parts[2])
                    fn_at[addr] = fn
    return costs, fn_at


def _demangle(sym: str) -> str:
    if sym.startswith("cfunc."):  # numba's C-ABI wrapper of a function: "cfunc." + its symbol
        return "cfunc " + _demangle(sym[len("cfunc.") :])
    name = subprocess.run(["c++filt", sym], capture_output=True, text=True).stdout.strip()
    return name.split("[abi")[0].replace("nt_memory::kernels::", "")


def attribute(work: str, dump: str) -> tuple[collections.Counter, dict[str, tuple[str, str, collections.Counter]]]:
    """Instructions by function name, and for each JIT function its object file, symbol and
    counts by offset (for ``--annotate``)."""
    costs, fn_at = _counts(dump)
    with open(os.path.join(work, "index.json")) as f:
        index = json.load(f)
    with open(os.path.join(work, "anchors.json")) as f:
        anchors = json.load(f)
    ranges = []
    for name, (sym, addr) in anchors.items():
        syms = _symbols(index[name])
        base = addr - syms[sym][0]
        ranges += [(base + off, base + off + size, s, index[name], base) for s, (off, size) in syms.items()]
    ranges.sort()
    starts = [r[0] for r in ranges]
    by_fn: collections.Counter = collections.Counter()
    jit: dict[str, tuple[str, str, collections.Counter]] = {}
    for a, ir in costs.items():
        i = bisect.bisect_right(starts, a) - 1
        if i >= 0 and a < ranges[i][1]:
            start, _end, sym, obj, base = ranges[i]
            name = _demangle(sym)
            jit.setdefault(name, (obj, sym, collections.Counter()))[2][a - base] += ir
        else:
            name = fn_at[a]
        by_fn[name] += ir
    return by_fn, jit


def annotate(obj: str, sym: str, counts: collections.Counter, per: int) -> str:
    out = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", f"--disassemble={sym}", obj], capture_output=True, text=True
    )
    lines = []
    for line in out.stdout.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\s+(.*)", line)
        if m and counts.get(int(m.group(1), 16)):
            lines.append(f"{counts[int(m.group(1), 16)] / per:8.2f}  {m.group(1):>6}  {m.group(2)[:100]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m nt_memory.benchmarks.kernel_profile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("case", choices=CASES)
    ap.add_argument("--keys", type=int, default=5000, help="keys put or got in the counted run (default 5,000)")
    ap.add_argument("--top", type=int, default=25, help="functions listed (default 25)")
    ap.add_argument("--annotate", metavar="FUNCTION", help="a JIT function's machine code with counts per key")
    ap.add_argument("--worker", nargs=2, metavar=("PHASE", "WORKDIR"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not BATCH <= args.keys <= KEYS or args.keys % BATCH:
        ap.error(f"--keys must be a multiple of {BATCH} up to {KEYS:,} (the system's keys), got {args.keys:,}")
    if args.worker:
        worker(args.case, args.worker[0], args.worker[1], args.keys)
        return 0
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is not on PATH: apt-get install valgrind (Debian's package)")
    work = tempfile.mkdtemp(prefix="nt-memory-kernel-profile-")
    try:
        env = dict(
            os.environ,
            NUMBA_CPU_NAME=CPU_NAME,
            NUMBA_CPU_FEATURES=CPU_FEATURES,
            NUMBA_CACHE_DIR=os.path.join(work, "numba"),
        )
        env.pop("NUMBA_BOUNDSCHECK", None)
        me = [sys.executable, "-m", "nt_memory.benchmarks.kernel_profile", args.case, "--keys", str(args.keys)]
        subprocess.run([*me, "--worker", "objects", work], env=env, check=True)
        out = os.path.join(work, "cg.out")
        cmd = [
            valgrind,
            "--tool=callgrind",
            "--separate-threads=yes",
            "--dump-before=getppid",
            "--dump-instr=yes",
            f"--callgrind-out-file={out}",
            *me,
            "--worker",
            "profile",
            work,
        ]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"callgrind run failed ({done.returncode}):\n{done.stderr[-3000:]}")
        # The main thread's dumps at the two marks: start to the first, then the counted run.
        dumps = sorted(glob.glob(out + ".*-01"), key=lambda p: int(p.rsplit(".", 1)[1].split("-")[0]))
        if len(dumps) != 2:
            raise SystemExit(f"expected 2 dumps of the main thread, found {len(dumps)}")
        by_fn, jit = attribute(work, dumps[1])
        total = sum(by_fn.values())
        print(
            f"{args.case}: {total / args.keys:,.0f} instructions per key ({args.keys:,} keys, callgrind, "
            f"kernels built for {CPU_NAME}); by function, per key:"
        )
        for name, ir in by_fn.most_common(args.top):
            print(f"{ir / args.keys:10,.1f}  {name}{'' if name not in jit else '   (numba)'}")
        if args.annotate:
            if args.annotate not in jit:
                raise SystemExit(f"{args.annotate!r} ran no instruction; numba functions that did: {sorted(jit)}")
            obj, sym, counts = jit[args.annotate]
            print(f"\n{args.annotate}, instructions per key at each address:\n" + annotate(obj, sym, counts, args.keys))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
