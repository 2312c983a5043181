"""Consensus voting between agents: weighted voters, proposals with a quorum, exact semantics.

A proposal is **Approved** once the approving weight reaches ``quorum`` x the total registered
weight, **Rejected** as soon as it can no longer get there (the weight not yet against it is below
the quorum), **Expired** at its deadline, and **Pending** otherwise. One vote per voter: a second
vote raises ``ConsensusError`` and the first stands; a vote counts with the voter's registered
weight. A decided result never changes. State lives in shared memory under one lock word (owner
word: a holder that dies is taken over); proposals' data and every decision go to L3.

Segment words (``consensus`` part)::

    control   0 LOCK  1 NEXT_ID  2 NVOTERS  3 TOTAL_WEIGHT (float64 bits)  8 NOTIFY (futex word)
              4 REDO_COUNT  16.. REDO pairs (word index, value): see _apply
    voters    MAX_VOTERS x 8 words: HASH | WEIGHT (f64) | NAME_LEN | NAME (40 bytes)
    proposals MAX_PROPOSALS x 16 words, slot = id % MAX_PROPOSALS:
              ID | STATUS | QUORUM (f64) | DEADLINE_NS | APPROVE (f64) | REJECT (f64) | TOTAL (f64,
              at decision) | NVOTES | VOTED (4 words: a bit per voter slot)
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import time

import numpy as np
import xxhash

from nt_memory.errors import ConfigError, ConsensusError, LockTimeout
from nt_memory.kernels.lockword import lockword_acquire, lockword_release, lockword_steal
from nt_memory.kernels.words import word_fetch_add, word_load, word_store
from nt_memory.shm import layout as L
from nt_memory.shm.system import System
from nt_memory.shm.wait import futex_wait, futex_wake
from nt_memory.tiers.l3 import ColdStore

MAX_VOTERS = 256
MAX_PROPOSALS = 1024
CTL_WORDS = 32
VOTER_WORDS = 8
PROPOSAL_WORDS = 16
C_LOCK, C_NEXT_ID, C_NVOTERS, C_TOTAL, C_REDO_COUNT, C_NOTIFY, C_REDO = 0, 1, 2, 3, 4, 8, 16
REDO_MAX = 8  # word writes one update may need
V_HASH, V_WEIGHT, V_NAME_LEN, V_NAME = 0, 1, 2, 3
P_ID, P_STATUS, P_QUORUM, P_DEADLINE, P_APPROVE, P_REJECT, P_TOTAL, P_NVOTES, P_VOTED = range(9)
EPSILON = 1e-9  # weights are floats: "exactly at quorum" must count as reaching it


WORDS = CTL_WORDS + MAX_VOTERS * VOTER_WORDS + MAX_PROPOSALS * PROPOSAL_WORDS


def consensus_layout() -> L.Layout:
    lay = L.Layout()
    lay.add("words", WORDS * 8)
    return lay


class ConsensusStatus(enum.IntEnum):
    PENDING = 1
    APPROVED = 2
    REJECTED = 3
    EXPIRED = 4


@dataclasses.dataclass(frozen=True)
class Proposal:
    """What is voted on. ``quorum`` is a fraction of the total registered weight (0 < q <= 1);
    ``timeout`` (seconds from submission) sets a deadline. ``id`` is filled in on submission."""

    proposer: str
    data: object = None
    quorum: float = 0.5
    timeout: float | None = None
    id: str = ""


@dataclasses.dataclass(frozen=True)
class Vote:
    proposal_id: str
    voter: str
    approve: bool
    weight: float | None = None


@dataclasses.dataclass(frozen=True)
class ConsensusResult:
    """A proposal's state and tallies. ``status`` is a :class:`ConsensusStatus`."""

    proposal_id: str
    status: ConsensusStatus
    approve_weight: float
    reject_weight: float
    total_weight: float
    quorum: float
    votes: int

    @property
    def decided(self) -> bool:
        return self.status != ConsensusStatus.PENDING

    @property
    def approved(self) -> bool:
        return self.status == ConsensusStatus.APPROVED

    def to_json(self) -> dict:
        return dataclasses.asdict(self) | {"status": self.status.name}


def _agent(name, what: str) -> bytes:
    if not isinstance(name, str) or not name or len(name.encode()) > 40 or "\0" in name:
        raise ConfigError(f"{what}={name!r} must be a non-empty str of at most 40 UTF-8 bytes")
    return name.encode()


def _weight(w, what: str) -> float:
    if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w <= 0:
        raise ConfigError(f"{what}={w!r} must be a finite number > 0")
    return float(w)


class Consensus:
    """The consensus state of a system, as seen from this process."""

    def __init__(self, system: System, store: ColdStore):
        seg = system.parts["consensus"]
        self.words = seg.region(consensus_layout().offset("words"), WORDS * 8, np.int64)
        self.f64 = self.words.view(np.float64)
        self.system = system
        self.store = store
        self._vbase = CTL_WORDS
        self._pbase = CTL_WORDS + MAX_VOTERS * VOTER_WORDS
        self.notify_addr = int(self.words.ctypes.data) + C_NOTIFY * 8

    # ---------------------------------------------------------------------------- the lock
    def _lock(self):
        owner = self.system.owner
        deadline = time.monotonic() + 10
        while not lockword_acquire(self.words, C_LOCK, owner):
            holder = int(self.words[C_LOCK])
            if holder and not self.system.owner_alive(holder):
                lockword_steal(self.words, C_LOCK, holder, 0)
            elif time.monotonic() > deadline:
                raise LockTimeout(f"the consensus state of system {self.system.name!r} stayed locked")
        if self.words[C_REDO_COUNT]:
            self._replay()  # the previous holder died half-way through an update

    def _apply(self, writes: list[tuple[int, int]]) -> None:
        """Write several words as one crash-safe update (caller holds the lock): stage the absolute
        values in the redo log, publish its length, write them, clear the log. A holder killed
        half-way leaves the log staged, and the next holder replays it (:meth:`_replay`); writing
        absolute values twice is harmless."""
        for i, (idx, value) in enumerate(writes):
            self.words[C_REDO + 2 * i] = idx
            self.words[C_REDO + 2 * i + 1] = value
        word_store(self.words.ctypes.data + C_REDO_COUNT * 8, len(writes))
        self._replay()

    def _replay(self) -> None:
        n = int(self.words[C_REDO_COUNT])
        for i in range(min(n, REDO_MAX)):
            self.words[int(self.words[C_REDO + 2 * i])] = self.words[C_REDO + 2 * i + 1]
        word_store(self.words.ctypes.data + C_REDO_COUNT * 8, 0)

    @staticmethod
    def _bits(x: float) -> int:
        return int(np.float64(x).view(np.int64))

    def _unlock(self, changed: bool) -> None:
        lockword_release(self.words, C_LOCK)
        if changed:
            word_fetch_add(self.notify_addr, 1)
            futex_wake(self.notify_addr)

    # ------------------------------------------------------------------------------ voters
    def _voter_slot(self, raw: bytes, create: bool) -> int:
        h = xxhash.xxh3_64_intdigest(raw) & 0x7FFF_FFFF_FFFF_FFFF or 1
        for probe in range(MAX_VOTERS):
            i = (h + probe) % MAX_VOTERS
            b = self._vbase + i * VOTER_WORDS
            sh = int(self.words[b + V_HASH])
            if sh == h:
                n = int(self.words[b + V_NAME_LEN])
                if self.words[b + V_NAME : b + V_NAME + 5].tobytes()[:n] == raw:
                    return i
            elif sh == 0:
                if not create:
                    return -1
                self.words[b + V_NAME_LEN] = len(raw)
                self.words[b + V_NAME : b + V_NAME + 5] = np.frombuffer(raw.ljust(40, b"\0"), np.int64)
                self.words[b + V_HASH] = h
                self.words[C_NVOTERS] += 1
                return i
        if create:
            raise ConsensusError(f"all {MAX_VOTERS} voter slots are in use")
        return -1

    def register_voter(self, agent_id: str, weight: float = 1.0) -> None:
        """Register (or re-weight) a voter. The total registered weight is what quorums are of."""
        raw = _agent(agent_id, "agent_id")
        w = _weight(weight, "weight")
        self._lock()
        try:
            i = self._voter_slot(raw, True)
            b = self._vbase + i * VOTER_WORDS
            total = float(self.f64[C_TOTAL]) + w - float(self.f64[b + V_WEIGHT])
            self._apply([(C_TOTAL, self._bits(total)), (b + V_WEIGHT, self._bits(w))])
        finally:
            self._unlock(True)

    def total_weight(self) -> float:
        return float(self.f64[C_TOTAL])

    # --------------------------------------------------------------------------- proposals
    def submit_proposal(self, proposal: Proposal) -> str:
        """Open ``proposal`` for votes; returns its id."""
        if not isinstance(proposal, Proposal):
            raise ConfigError(f"submit_proposal takes a Proposal, got {type(proposal).__name__}")
        _agent(proposal.proposer, "proposer")
        q = proposal.quorum
        if isinstance(q, bool) or not isinstance(q, int | float) or not 0 < q <= 1:
            raise ConfigError(f"quorum={q!r} must be a fraction in (0, 1]")
        deadline = 0
        if proposal.timeout is not None:
            deadline = time.time_ns() + int(_weight(proposal.timeout, "timeout") * 1e9)
        try:
            blob = json.dumps({"proposer": proposal.proposer, "data": proposal.data, "quorum": q})
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"proposal data must be JSON-able: {exc}") from None
        self._lock()
        try:
            pid = int(self.words[C_NEXT_ID]) + 1
            self.words[C_NEXT_ID] = pid
            b = self._pbase + (pid % MAX_PROPOSALS) * PROPOSAL_WORDS
            self.words[b : b + PROPOSAL_WORDS] = 0
            self.words[b + P_STATUS] = ConsensusStatus.PENDING
            self.f64[b + P_QUORUM] = q
            self.words[b + P_DEADLINE] = deadline
            self.words[b + P_ID] = pid
        finally:
            self._unlock(True)
        self.store.write([("consensus", f"proposal/{pid}".encode(), blob.encode())])
        return str(pid)

    def _slot(self, proposal_id) -> tuple[int, int]:
        try:
            pid = int(proposal_id)
        except (TypeError, ValueError):
            raise ConsensusError(f"unknown proposal {proposal_id!r}") from None
        b = self._pbase + (pid % MAX_PROPOSALS) * PROPOSAL_WORDS
        return pid, b

    def _evaluate(self, pid: int, b: int) -> tuple[ConsensusResult, bool]:
        """The result, deciding it if the tallies or the clock say so (caller holds the lock).
        Returns (result, newly decided)."""
        status = ConsensusStatus(int(self.words[b + P_STATUS]))
        newly = False
        if status == ConsensusStatus.PENDING:
            total = float(self.f64[C_TOTAL])
            q = float(self.f64[b + P_QUORUM])
            approve, reject = float(self.f64[b + P_APPROVE]), float(self.f64[b + P_REJECT])
            need = q * total
            deadline = int(self.words[b + P_DEADLINE])
            if total > 0 and approve >= need - EPSILON:
                status = ConsensusStatus.APPROVED
            elif total > 0 and total - reject < need - EPSILON:
                status = ConsensusStatus.REJECTED
            elif deadline and time.time_ns() >= deadline:
                status = ConsensusStatus.EXPIRED
            if status != ConsensusStatus.PENDING:
                self._apply([(b + P_TOTAL, self._bits(total)), (b + P_STATUS, int(status))])
                newly = True
        total = float(self.f64[b + P_TOTAL]) if status != ConsensusStatus.PENDING else float(self.f64[C_TOTAL])
        return (
            ConsensusResult(
                str(pid),
                status,
                float(self.f64[b + P_APPROVE]),
                float(self.f64[b + P_REJECT]),
                total,
                float(self.f64[b + P_QUORUM]),
                int(self.words[b + P_NVOTES]),
            ),
            newly,
        )

    def _log(self, result: ConsensusResult) -> None:
        key = f"decision/{result.proposal_id}".encode()
        self.store.write([("consensus", key, json.dumps(result.to_json()).encode())])

    def _from_log(self, pid: int) -> ConsensusResult:
        raw = self.store.get("consensus", f"decision/{pid}".encode())
        if raw is None:
            raise ConsensusError(f"unknown proposal {pid}")
        d = json.loads(raw)
        return ConsensusResult(**(d | {"status": ConsensusStatus[d["status"]]}))

    def vote(self, vote: Vote) -> ConsensusResult:
        """Count ``vote`` (with the voter's registered weight) and return the proposal's result.
        ``ConsensusError`` for an unknown proposal or voter, a second vote by the same voter, or a
        ``weight`` that differs from the registered one."""
        if not isinstance(vote, Vote):
            raise ConfigError(f"vote takes a Vote, got {type(vote).__name__}")
        raw = _agent(vote.voter, "voter")
        pid, b = self._slot(vote.proposal_id)
        self._lock()
        changed = newly = False
        try:
            if int(self.words[b + P_ID]) != pid:
                raise ConsensusError(f"unknown proposal {vote.proposal_id!r}")
            i = self._voter_slot(raw, False)
            if i < 0:
                raise ConsensusError(f"voter {vote.voter!r} is not registered (register_voter first)")
            weight = float(self.f64[self._vbase + i * VOTER_WORDS + V_WEIGHT])
            if vote.weight is not None and abs(float(vote.weight) - weight) > EPSILON:
                raise ConsensusError(f"vote weight {vote.weight!r} differs from {vote.voter!r}'s registered {weight}")
            word, bit = divmod(i, 64)
            voted = int(self.words[b + P_VOTED + word])
            mask = 1 << bit
            if voted & mask:
                raise ConsensusError(f"{vote.voter!r} has already voted on proposal {vote.proposal_id}")
            result, newly = self._evaluate(pid, b)
            if not result.decided:
                bits = voted | mask
                tally = b + (P_APPROVE if vote.approve else P_REJECT)
                self._apply(
                    [
                        (b + P_VOTED + word, bits - (1 << 64) if bits >= 1 << 63 else bits),
                        (b + P_NVOTES, int(self.words[b + P_NVOTES]) + 1),
                        (tally, self._bits(float(self.f64[tally]) + weight)),
                    ]
                )
                changed = True
                result, newly = self._evaluate(pid, b)
        finally:
            self._unlock(changed or newly)
        if newly:
            self._log(result)
        return result

    def proposal_ids(self) -> list[str]:
        """Ids of the proposals still held in shared memory (the newest MAX_PROPOSALS)."""
        last = int(self.words[C_NEXT_ID])
        return [str(i) for i in range(max(1, last - MAX_PROPOSALS + 1), last + 1)]

    def result(self, proposal_id) -> ConsensusResult:
        pid, b = self._slot(proposal_id)
        self._lock()
        newly = False
        try:
            if int(self.words[b + P_ID]) != pid:
                return self._from_log(pid)
            result, newly = self._evaluate(pid, b)
        finally:
            self._unlock(newly)
        if newly:
            self._log(result)
        return result

    def wait(self, proposal_id, timeout: float | None = None) -> ConsensusResult:
        """Return as soon as the proposal is decided (or expires); the pending result when
        ``timeout`` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            seen = word_load(self.notify_addr)
            result = self.result(proposal_id)
            if result.decided:
                return result
            pid, b = self._slot(proposal_id)
            dl = int(self.words[b + P_DEADLINE])
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return result
            step = 0.1 if left is None else min(left, 0.1)
            if dl:
                step = min(step, max(0.0, (dl - time.time_ns()) / 1e9) + 0.0005)
            futex_wait(self.notify_addr, seen, step)
