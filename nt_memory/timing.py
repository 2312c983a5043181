"""Per-call timing and its summary: the one percentile helper of the benchmarks and the demo.

Every latency is a ``time.perf_counter_ns`` pair around one call (its own cost is not subtracted;
the reports print it). A summary always has the same keys, whatever the unit::

    {"unit": "ns", "n": 200000, "p50": 612.0, "p95": 801.0, "p99": 1502.0, "p999": 4810.0, "max": 91230.0}

so a report's JSON reads ``row["p99"]`` with the unit beside it, never ``p99_us`` in one report and
``p99_ns`` in the next.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np

UNITS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}
QUANTILES = {"p50": 50.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}


def percentiles(samples_ns: Iterable[float] | np.ndarray, unit: str = "ns") -> dict:
    """p50, p95, p99, p99.9 and max of latencies given in nanoseconds, reported in ``unit``
    (ns, us, ms or s). An empty sample gives NaN figures and ``n == 0``."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {sorted(UNITS)}, got {unit!r}")
    a = np.asarray(samples_ns if isinstance(samples_ns, np.ndarray) else list(samples_ns), np.float64)
    a = a / UNITS[unit]
    out: dict = {"unit": unit, "n": int(a.size)}
    figures = np.percentile(a, list(QUANTILES.values())) if a.size else [float("nan")] * len(QUANTILES)
    out.update({k: float(v) for k, v in zip(QUANTILES, figures, strict=True)})
    out["max"] = float(a.max()) if a.size else float("nan")
    return out


def time_calls(fn: Callable, args_list: Sequence[tuple]) -> np.ndarray:
    """Per-call latency (ns) of ``fn(*args)`` for each args tuple: a perf_counter_ns pair each."""
    clock = time.perf_counter_ns
    lat = np.empty(len(args_list), np.int64)
    for i, a in enumerate(args_list):
        t0 = clock()
        fn(*a)
        lat[i] = clock() - t0
    return lat


# The seed's Performance Targets (its README's table): row -> (statistic, bound, unit). A figure
# meets its target when it is strictly below the bound. ``nt-memory bench`` and the demo judge
# against this one table.
SEED_TARGETS = {
    "l1_get": ("p99", 1_000, "ns"),
    "position_lookup_njit": ("p99", 100, "ns"),
    "vector_search": ("p95", 1_000, "us"),
    "memory_footprint": ("per_1m", 1024, "MiB"),
    "cross_agent_pubsub": ("p99", 5_000, "us"),
}


def meets(row: str, value: float) -> bool:
    """Whether ``value`` (in the row's unit) meets the seed's target for ``row``."""
    return value < SEED_TARGETS[row][1]


def human(value: float, unit: str) -> str:
    """A latency or size in the unit a reader would pick: ``human(3_505_059, "us") == "3.51 s"``."""
    scale = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}
    if unit in scale:
        ns = value * scale[unit]
        for name in ("s", "ms", "us"):
            if ns >= scale[name]:
                x = ns / scale[name]
                return f"{x:.3g} {'µs' if name == 'us' else name}"
        return f"{ns:.0f} ns"
    return f"{value:,.0f} {unit}"
