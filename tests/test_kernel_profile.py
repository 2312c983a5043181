"""The kernel profiler's reading of callgrind's output (the valgrind run itself is a tool run by
hand: python -m nt_memory.benchmarks.kernel_profile)."""

from __future__ import annotations

import pytest

from nt_memory.benchmarks.kernel_profile import _counts, _demangle, main

# Two dumps of one run: names defined in the first are used by number only in the second; a
# calls= line is followed by the call's inclusive cost, which is not the caller's own.
FIRST = """positions: instr line
events: Ir
fn=(1) first_dump_fn
0x10 1 5
fn=(2) kernel_caller
0x20 1 1
"""
SECOND = """positions: instr line
events: Ir
fn=(1)
0x100 3 10
+4 * 20
cfn=(2)
calls=7 0x200 1
+2 * 999
+3 -1 30
fn=(2)
0x200 1 40
* * 2
-8 1 1
"""


def test_counts_are_self_costs_by_address_with_names_from_the_whole_run(tmp_path):
    (tmp_path / "cg.out.1-01").write_text(FIRST)
    (tmp_path / "cg.out.2-01").write_text(SECOND)
    costs, fn_at = _counts(str(tmp_path / "cg.out.2-01"))
    assert costs == {0x100: 10, 0x104: 20, 0x109: 30, 0x200: 42, 0x1F8: 1}
    assert fn_at[0x109] == "first_dump_fn" and fn_at[0x200] == fn_at[0x1F8] == "kernel_caller"


def test_numba_symbols_read_as_their_python_names():
    sym = "_ZN9nt_memory7kernels5table9table_putB3v24B48c8tJTIeFIjxB2IKSgI4CrvSCKg1MMYiAhicRsBpNAA_3d_3dExx"
    assert _demangle(sym) == "table::table_put"
    assert _demangle("cfunc." + sym) == "cfunc table::table_put"


def test_a_key_count_outside_the_system_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["put", "--keys", "20100"])
    assert "--keys must be a multiple of 100 up to 20,000 (the system's keys), got 20,100" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["put", "--keys", "150"])
