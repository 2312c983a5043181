"""Each layout module's byte diagram says what its constants make: a size in a diagram that
drifts from the code fails here (the L1 stripe once read 64 B where the code made 128 B)."""

from __future__ import annotations

import re

import pytest

from nt_memory.kernels.layout import table as T
from nt_memory.shm import consensus_layout as K
from nt_memory.shm import embed_layout as E
from nt_memory.shm import l1_layout, layout


def _diagram(module) -> str:
    return " ".join(module.__doc__.split())  # one line: a size may wrap in the source


@pytest.mark.parametrize(
    "module, says",
    [
        (l1_layout, f"header ({layout.HEADER_BYTES} B)"),
        (l1_layout, f"table header ({T.TABLE_HDR_WORDS} words)"),
        (l1_layout, f"stripes (NSTRIPES x {T.STRIPE_BYTES} B)"),
        (l1_layout, f"slots (NSLOTS x {T.SLOT_BYTES} B)"),
        (E, f"header ({layout.HEADER_BYTES} B)"),
        (E, f"control words ({E.CTL_WORDS} int64)"),
        (E, f"record headers ({E.RECORD_HDR_BYTES} B each)"),
        (E, f"chunk words ({E.CHUNK_WORDS} int64)"),
        (K, "MAX_VOTERS x VOTER_WORDS"),
        (K, f"NAME ({K.VOTER_NAME_BYTES} bytes)"),
        (K, f"VOTED ({K.VOTED_WORDS} words"),
    ],
)
def test_the_diagram_says_what_the_constants_make(module, says):
    assert says in _diagram(module), f"{module.__name__}: the diagram should say {says!r}"


def test_every_size_in_the_l1_diagram_is_checked():
    sizes = re.findall(r"\((?:[A-Z]+ x )?\d+ (?:B|words)\)", _diagram(l1_layout))
    assert len(sizes) >= 5  # header, table header, stripes, slots, access bytes (+ the arena's header)


def test_consensus_regions_are_a_running_sum():
    assert K.VOTERS_BASE == K.CTL_WORDS
    assert K.PROPOSALS_BASE == K.VOTERS_BASE + K.MAX_VOTERS * K.VOTER_WORDS
    assert K.WORDS == K.PROPOSALS_BASE + K.MAX_PROPOSALS * K.PROPOSAL_WORDS
    assert K.consensus_layout().total_bytes >= K.WORDS * 8
