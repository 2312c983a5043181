"""A receiver's spin window: one rule (``next_spin``) on both paths, and a slowly paced subscriber
stops spinning."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nt_memory import native
from nt_memory.coordination import pubsub
from nt_memory.coordination.pubsub import SPIN_GROW_FACTOR, SPIN_MIN_S, SPIN_S, next_spin

windows = st.integers(0, int(SPIN_S * 1e9))
waits = st.integers(0, 10**9)


@given(windows, waits)
def test_the_window_stays_within_zero_and_spin_s_and_moves_the_right_way(cur_ns, waited_ns):
    cur, waited = cur_ns / 1e9, waited_ns / 1e9
    nxt = next_spin(cur, waited)
    assert 0.0 <= nxt <= SPIN_S
    if waited <= SPIN_GROW_FACTOR * SPIN_S:
        assert nxt >= min(SPIN_S, max(SPIN_MIN_S, cur))  # soon: never narrower
    else:
        assert nxt <= cur / 2  # late: at most half, and none below SPIN_MIN_S
        assert nxt == 0.0 or nxt >= SPIN_MIN_S


@pytest.mark.skipif(native.fast is None, reason="the C receiver is not built (pure path)")
@given(windows, waits)
def test_the_c_receiver_keeps_the_same_rule(cur_ns, waited_ns):
    expected = next_spin(cur_ns / 1e9, waited_ns / 1e9)
    got = native.fast.next_spin(cur_ns, int(SPIN_S * 1e9), waited_ns) / 1e9
    assert got == pytest.approx(expected, abs=1e-9)


def test_the_c_defines_match_the_python_constants():
    src = Path(native.__file__).with_name("_fastpath.c")
    if not src.exists():
        pytest.skip("installed without the C source")
    defines = dict(re.findall(r"^#define (\w+) (-?\d+)\b", src.read_text(), re.M))
    assert int(defines["SPIN_MIN_NS"]) == round(SPIN_MIN_S * 1e9)
    assert int(defines["SPIN_GROW_FACTOR"]) == SPIN_GROW_FACTOR
    from nt_memory.kernels.layout import ring

    for name in ("TAIL", "NOTIFY", "WAITERS", "SPINNERS"):
        assert int(defines[f"RING_{name}_OFFSET"]) == getattr(ring, f"RING_{name}_IDX") * 8


def test_a_subscriber_paced_slower_than_its_window_stops_spinning(mem):
    sub = mem.subscribe("slow/pace")
    assert sub.spin_window == pytest.approx(SPIN_S)

    taken = threading.Semaphore(1)

    def publish():
        for i in range(8):
            taken.acquire(timeout=10)  # the last one was received (a first call may compile)
            time.sleep(0.005)  # so this one comes long after recv began: every recv sleeps
            mem.publish("slow/pace", {"i": i})

    t = threading.Thread(target=publish)
    t.start()
    got = []
    for _ in range(8):
        got.append(sub.recv(timeout=10))
        taken.release()
    t.join()
    assert [m["i"] for m in got] == list(range(8))
    # 50 -> 25 -> 12.5 -> 6.25 -> 0 us after four late messages; never a spin after that
    assert sub.spin_window == 0.0
    assert pubsub.SPIN_S == SPIN_S
