"""The error table: every public error is exported, every status a user can meet maps to one class
with a message and a hint, and each tier raises through the table."""

from __future__ import annotations

import inspect

import pytest

import nt_memory
from nt_memory import errors
from nt_memory.kernels import status as S
from nt_memory.tiers.l1 import HotCache

# Statuses that are answers, never errors: a caller acts on them (miss, retry, rehash, reserve).
ANSWERS = {"OK", "NOT_FOUND", "EXPIRED", "DELETED", "NEEDS_REHASH", "STALE", "RESERVE"}


def test_every_error_class_is_exported_and_roots_at_nt_memory_error():
    classes = {n for n, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, Exception)}
    assert classes <= set(nt_memory.__all__)
    for n in classes:
        assert issubclass(getattr(nt_memory, n), nt_memory.NtMemoryError), n


def test_all_is_grouped_and_sorted_within_each_group():
    source = inspect.getsource(nt_memory).split("__all__ = [", 1)[1].split("]", 1)[0]
    groups: list[list[str]] = [[]]
    for line in source.strip().splitlines():
        line = line.strip()
        if line.startswith("#"):
            groups.append([])
        elif line:
            groups[-1].append(line.strip('",'))
    for g in groups:
        assert g == sorted(g, key=str.lower), g
    assert len(nt_memory.__all__) == len(set(nt_memory.__all__))


def test_every_error_status_is_in_the_table_and_nothing_else():
    assert set(errors.STATUS_ERRORS) == set(S.NAMES.values()) - ANSWERS


@pytest.mark.parametrize("status", sorted(errors.STATUS_ERRORS))
def test_table_entries_name_subject_detail_and_hint(status):
    cls, _, hint = errors.STATUS_ERRORS[status]
    exc = errors.status_error(status, "L1 of system 'x'", "the limit is 7")
    assert type(exc) is cls and isinstance(exc, nt_memory.NtMemoryError)
    assert str(exc).startswith("L1 of system 'x' ") and "the limit is 7" in str(exc) and hint in str(exc)


def test_an_unknown_status_is_still_an_nt_memory_error():
    exc = errors.status_error("-99", "topic 't'")
    assert isinstance(exc, nt_memory.SegmentError) and "-99" in str(exc)


def test_l1_raises_through_the_table(name):
    cache = HotCache.create(name, max_entries=16, max_key_bytes=16, max_value_bytes=64)
    try:
        with pytest.raises(nt_memory.ValueTooLarge, match="max_key_bytes=16") as info:
            cache.put("ns", "k" * 40, b"v")
        assert errors.STATUS_ERRORS["KEY_TOO_LARGE"][2] in str(info.value)
        cache.close()
        with pytest.raises(nt_memory.SegmentClosed):
            cache.get("ns", "k")
    finally:
        cache.close()
        cache.unlink()
