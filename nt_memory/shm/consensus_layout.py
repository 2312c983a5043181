"""Layout of the ``consensus`` segment (coordination/consensus.py runs it): one array of int64
words, float64 values stored as their bits. Each region's first word is a running sum of the ones
before it, so the diagram and the constants cannot drift apart::

    header | words:
      control    CTL_WORDS           0 LOCK  1 NEXT_ID  2 NVOTERS  3 TOTAL_WEIGHT (f64)  4 REDO_COUNT
                                     5 ID_LIMIT  6 LOGGING (id staged in the redo log)  8 NOTIFY (futex)
                                     16.. REDO pairs (word index, value), at most REDO_MAX
      voters     MAX_VOTERS x VOTER_WORDS        HASH | WEIGHT (f64) | NAME_LEN | NAME (40 bytes)
      proposals  MAX_PROPOSALS x PROPOSAL_WORDS  slot = id % MAX_PROPOSALS:
                 ID | STATUS | QUORUM (f64) | DEADLINE_NS | APPROVE (f64) | REJECT (f64) |
                 TOTAL (f64, at decision) | NVOTES | VOTED (4 words: a bit per voter slot)
"""

from __future__ import annotations

from nt_memory.shm import layout as L

MAX_VOTERS = 256
MAX_PROPOSALS = 1024
CTL_WORDS = 32
VOTER_WORDS = 8
PROPOSAL_WORDS = 16
VOTED_WORDS = 4  # MAX_VOTERS bits

# control words
C_LOCK, C_NEXT_ID, C_NVOTERS, C_TOTAL, C_REDO_COUNT, C_ID_LIMIT, C_LOGGING = range(7)
C_NOTIFY = 8
C_REDO = 16
REDO_MAX = 8  # word writes one update may need: (index, value) pairs up to CTL_WORDS
# a voter's words, from its slot's first
V_HASH, V_WEIGHT, V_NAME_LEN, V_NAME = range(4)
VOTER_NAME_BYTES = (VOTER_WORDS - V_NAME) * 8
# a proposal's words, from its slot's first
P_ID, P_STATUS, P_QUORUM, P_DEADLINE, P_APPROVE, P_REJECT, P_TOTAL, P_NVOTES, P_VOTED = range(9)

VOTERS_BASE = CTL_WORDS
PROPOSALS_BASE = VOTERS_BASE + MAX_VOTERS * VOTER_WORDS
WORDS = PROPOSALS_BASE + MAX_PROPOSALS * PROPOSAL_WORDS

assert C_REDO + 2 * REDO_MAX <= CTL_WORDS and P_VOTED + VOTED_WORDS <= PROPOSAL_WORDS
assert VOTED_WORDS * 64 >= MAX_VOTERS


def consensus_layout() -> L.Layout:
    lay = L.Layout()
    lay.add("words", WORDS * 8)
    return lay
