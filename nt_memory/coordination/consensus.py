"""Consensus voting between agents: weighted voters, proposals with a quorum, exact semantics.

A proposal is **Approved** once the approving weight reaches ``quorum`` x the total registered
weight, **Rejected** as soon as it can no longer get there (the weight not yet against it is below
the quorum), **Expired** at its deadline, and **Pending** otherwise. One vote per voter: a second
vote raises ``ConsensusError`` and the first stands; a vote counts with the voter's registered
weight. A decided result never changes. State lives in shared memory under one lock word (owner
word: a holder that dies is taken over); proposals' data, voters and every decision go to L3.

Durable before told: a decision is written to L3 (first write wins: an existing decision is never
replaced) while the deciding process still holds the lock, before the decided status is applied
in shared memory where others read it. A holder killed in between leaves the decision staged in
the redo log with LOGGING set, and the next holder logs it before replaying it. Proposal ids come
from a high-water mark held in L3 and reserved ahead in blocks (:data:`ID_BLOCK`), so ids are never
reused, across reboots either; voters are stored in L3 and loaded when a system is created.

The segment's words are laid out in shm/consensus_layout.py.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import time
from typing import Any

import numpy as np
import xxhash

from nt_memory.coordination.locks import remote_scope
from nt_memory.durations import seconds
from nt_memory.errors import ConfigError, ConsensusError, CorruptSegment
from nt_memory.kernels import lazy
from nt_memory.shm import layout as L
from nt_memory.shm.consensus_layout import (
    C_ID_LIMIT,
    C_LOCK,
    C_LOGGING,
    C_NEXT_ID,
    C_NOTIFY,
    C_NVOTERS,
    C_REDO,
    C_REDO_COUNT,
    C_TOTAL,
    MAX_PROPOSALS,
    MAX_VOTERS,
    P_APPROVE,
    P_DEADLINE,
    P_ID,
    P_NVOTES,
    P_QUORUM,
    P_REJECT,
    P_STATUS,
    P_TOTAL,
    P_VOTED,
    PROPOSAL_WORDS,
    PROPOSALS_BASE,
    REDO_MAX,
    V_HASH,
    V_NAME,
    V_NAME_LEN,
    V_WEIGHT,
    VOTER_NAME_BYTES,
    VOTER_WORDS,
    VOTERS_BASE,
    WORDS,
    consensus_layout,
)
from nt_memory.shm.owned import OwnedLock
from nt_memory.shm.system import PartSpec, System
from nt_memory.shm.wait import WaitSteps, arun_sleeps, futex_wake, run_sleeps
from nt_memory.tiers.l3 import ColdStore, required
from nt_memory.values import Duration

KW = lazy("words", globals())

ID_KEY = b"consensus/next_id"  # the high-water mark of proposal ids, in L3's meta database
ID_BLOCK = 1024
EPSILON = 1e-9  # weights are floats: "exactly at quorum" must count as reaching it


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


def agent_name(name, what: str) -> bytes:
    if not isinstance(name, str) or not name or len(name.encode()) > 40 or "\0" in name:
        raise ConfigError(f"{what}={name!r} must be a non-empty str of at most 40 UTF-8 bytes")
    return name.encode()


def check_weight(w, what: str) -> float:
    if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w <= 0:
        raise ConfigError(f"{what}={w!r} must be a finite number > 0")
    return float(w)


def checked_proposal(proposal: object) -> tuple[float, int]:
    """(quorum, deadline in wall ns or 0) of a proposal being submitted, or its ConfigError."""
    if not isinstance(proposal, Proposal):
        raise ConfigError(f"submit_proposal takes a Proposal, got {type(proposal).__name__}")
    agent_name(proposal.proposer, "proposer")
    q = proposal.quorum
    if isinstance(q, bool) or not isinstance(q, int | float) or not 0 < q <= 1:
        raise ConfigError(f"quorum={q!r} must be a fraction in (0, 1]")
    timeout = seconds(proposal.timeout, "timeout")
    return float(q), time.time_ns() + int(timeout * 1e9) if timeout is not None else 0


def decision(approve: float, reject: float, total: float, quorum: float, deadline_ns: int) -> ConsensusStatus:
    """The rules, for every scope: Approved once the approving weight reaches ``quorum`` x
    ``total``, Rejected once it can no longer, Expired at the deadline, else Pending."""
    need = quorum * total
    if total > 0 and approve >= need - EPSILON:
        return ConsensusStatus.APPROVED
    if total > 0 and total - reject < need - EPSILON:
        return ConsensusStatus.REJECTED
    if deadline_ns and time.time_ns() >= deadline_ns:
        return ConsensusStatus.EXPIRED
    return ConsensusStatus.PENDING


def init_consensus(seg, store: ColdStore) -> None:
    """Lay out a fresh consensus segment from what L3 holds: ids resume above the durable
    high-water mark, and the registered voters come back. Creator only, before publishing."""
    words = seg.region(consensus_layout().offset("words"), WORDS * 8, np.int64)
    base = store.high_water(ID_KEY)
    KW.store_word(words, C_NEXT_ID, base)
    KW.store_word(words, C_ID_LIMIT, store.reserve(ID_KEY, base, ID_BLOCK))
    total = 0.0
    for key, raw in store.items("consensus", b"voter/"):
        name = key[len(b"voter/") :]
        weight = float(json.loads(raw))
        i = _voter_slot(words, name, True)
        KW.store_word(words, VOTERS_BASE + i * VOTER_WORDS + V_WEIGHT, L.float_word(weight))
        total += weight
    KW.store_word(words, C_TOTAL, L.float_word(total))


def _voter_slot(words: np.ndarray, raw: bytes, create: bool) -> int:
    """The slot of voter ``raw`` (claimed if ``create``); -1 if absent. Caller holds the lock."""
    h = xxhash.xxh3_64_intdigest(raw) & 0x7FFF_FFFF_FFFF_FFFF or 1
    for probe in range(MAX_VOTERS):
        i = (h + probe) % MAX_VOTERS
        b = VOTERS_BASE + i * VOTER_WORDS
        sh = int(words[b + V_HASH])
        if sh == h:
            n = int(words[b + V_NAME_LEN])
            if words[b + V_NAME : b + V_NAME + 5].tobytes()[: max(0, n)] == raw:
                return i
        elif sh == 0:
            if not create:
                return -1
            KW.store_word(words, b + V_NAME_LEN, len(raw))
            KW.store_words(words, b + V_NAME, L.text_words(raw, VOTER_NAME_BYTES // 8))
            KW.store_word(words, b + V_HASH, h)
            KW.add_word(words, C_NVOTERS, 1)
            return i
    if create:
        raise ConsensusError(f"all {MAX_VOTERS} voter slots are in use")
    return -1


class Consensus:
    """The consensus state of a system, as seen from this process. Thread-safe."""

    PARTS: tuple[str, ...] = ("consensus",)

    @classmethod
    def part_specs(cls, config, store: ColdStore) -> list[PartSpec]:
        """The Part protocol's specs (shm/parts.py): the consensus words, laid out from what
        ``store`` (L3) holds: ids resume above the durable mark, the voters come back."""
        size = consensus_layout().total_bytes
        return [PartSpec("consensus", L.KIND_CONSENSUS, size, [1], lambda seg: init_consensus(seg, store))]

    @classmethod
    def attach(cls, system: System) -> Consensus:
        """An observer's view (the Part protocol): stats and verify; it cannot vote."""
        return cls(system, None)

    def __init__(self, system: System, store: ColdStore | None):
        seg = system.parts["consensus"]
        if seg.size != consensus_layout().total_bytes:
            raise CorruptSegment(f"system {system.name!r}: the consensus segment has an unexpected size")
        self.words = seg.region(consensus_layout().offset("words"), WORDS * 8, np.int64)
        self.f64 = self.words.view(np.float64)
        self.system = system
        # Consensus of other scopes ("cluster": nt_memory/cluster/consensus.py), set by the memory
        # system that offers it: submit_proposal(scope=...) and its proposal ids go there.
        self.scoped: dict[str, Any] = {}
        self.store = store
        self._vbase = VOTERS_BASE
        self._pbase = PROPOSALS_BASE
        self.notify_addr = int(self.words.ctypes.data) + C_NOTIFY * 8
        self._owned = OwnedLock(system, self.words, C_LOCK, "the consensus state")

    @property
    def l3(self) -> ColdStore:
        """The L3 store; an observer's view (``attach``) has none."""
        return required(self.store, f"the consensus state of system {self.system.name!r}")

    # ---------------------------------------------------------------------------- the lock
    def _lock(self):
        self._owned.acquire()
        try:
            if self.words[C_REDO_COUNT]:
                # The previous holder died half-way through an update: log a staged decision
                # first (it may not have reached L3), then apply what was staged.
                if self.words[C_LOGGING]:
                    self._log_staged()
                self._replay()
        except BaseException:
            self._owned.release()
            raise

    def _stage(self, writes: list[tuple[int, int]], logging: int = 0) -> None:
        """Stage absolute word values in the redo log and publish its length (caller holds the
        lock); ``logging``: the id of a decision among them, not yet in L3."""
        if len(writes) > REDO_MAX:
            raise ConsensusError(f"an update of {len(writes)} words exceeds the redo log's {REDO_MAX}")
        for i, (idx, value) in enumerate(writes):
            KW.store_word(self.words, C_REDO + 2 * i, idx)
            KW.store_word(self.words, C_REDO + 2 * i + 1, value)
        KW.store_word(self.words, C_LOGGING, logging)
        KW.store_word(self.words, C_REDO_COUNT, len(writes))

    def _apply(self, writes: list[tuple[int, int]]) -> None:
        """Write several words as one crash-safe update: stage them, write them, clear the log. A
        holder killed half-way leaves the log staged and the next holder replays it; writing
        absolute values twice is harmless."""
        self._stage(writes)
        self._replay()

    def _decide(self, b: int, result: ConsensusResult) -> ConsensusResult:
        """Make ``result`` (newly decided) durable in L3, then visible here. If L3 already holds a
        decision for the proposal, that one stands and is what becomes visible."""
        self._stage(
            [(b + P_TOTAL, L.float_word(result.total_weight)), (b + P_STATUS, int(result.status))],
            int(result.proposal_id),
        )
        kept = self._log(result)
        KW.store_word(self.words, C_REDO + 3, int(kept.status))  # the STATUS pair's value
        self._replay()
        return kept

    def _replay(self) -> None:
        n = int(self.words[C_REDO_COUNT])
        if not 0 <= n <= REDO_MAX:
            raise CorruptSegment(f"system {self.system.name!r}: the consensus redo log length {n} is impossible")
        for i in range(n):
            idx = int(self.words[C_REDO + 2 * i])
            if not (VOTERS_BASE <= idx < WORDS or idx in (C_TOTAL, C_NVOTERS, C_NEXT_ID, C_ID_LIMIT)):
                raise CorruptSegment(f"system {self.system.name!r}: the consensus redo log names word {idx}")
            KW.store_word(self.words, idx, int(self.words[C_REDO + 2 * i + 1]))
        KW.store_word(self.words, C_LOGGING, 0)
        KW.store_word(self.words, C_REDO_COUNT, 0)

    def _log_staged(self) -> None:
        """Log the decision a dead holder staged (redo pairs 0 and 1: its proposal's TOTAL and
        STATUS), keeping an earlier decision if L3 has one."""
        pid = int(self.words[C_LOGGING])
        _pid, b = self._slot(pid)
        if int(self.words[C_REDO_COUNT]) != 2 or int(self.words[C_REDO + 2]) != b + P_STATUS:
            return
        if int(self.words[b + P_ID]) != pid:
            return
        total = float(np.int64(self.words[C_REDO + 1]).view(np.float64))
        status = ConsensusStatus(int(self.words[C_REDO + 3]))
        kept = self._log(self._result_of(pid, b, status, total))
        KW.store_word(self.words, C_REDO + 3, int(kept.status))

    def _unlock(self, changed: bool) -> None:
        self._owned.release()
        if changed:
            KW.word_fetch_add(self.notify_addr, 1)
            futex_wake(self.notify_addr)

    # ------------------------------------------------------------------------------ voters
    def _voter_slot(self, raw: bytes, create: bool) -> int:
        return _voter_slot(self.words, raw, create)

    def _scope(self, scope: object) -> Any:
        return remote_scope(self.scoped, scope)

    def scope_of(self, proposal_id: object) -> Any:
        """The cluster consensus that owns ``proposal_id`` (a ``cluster-...`` id), or None."""
        remote = self.scoped.get("cluster")
        return remote if remote is not None and remote.owns(proposal_id) else None

    def register_voter(self, agent_id: str, weight: float = 1.0, scope: str = "local") -> None:
        """Register (or re-weight) a voter. The total registered weight is what quorums are of.
        The registration is in L3 before it counts here, so it survives a reboot. ``scope="cluster"``:
        a voter of every host's cluster proposals."""
        if scope != "local":
            return self._scope(scope).register_voter(agent_id, weight)
        raw = agent_name(agent_id, "agent_id")
        w = check_weight(weight, "weight")
        self._lock()
        try:
            i = self._voter_slot(raw, True)
            b = self._vbase + i * VOTER_WORDS
            self.l3.write([("consensus", b"voter/" + raw, json.dumps(w).encode())])
            total = float(self.f64[C_TOTAL]) + w - float(self.f64[b + V_WEIGHT])
            self._apply([(C_TOTAL, L.float_word(total)), (b + V_WEIGHT, L.float_word(w))])
        finally:
            self._unlock(True)

    def total_weight(self) -> float:
        return float(self.f64[C_TOTAL])

    # --------------------------------------------------------------------------- proposals
    def submit_proposal(self, proposal: Proposal, scope: str = "local") -> str:
        """Open ``proposal`` for votes; returns its id (never one issued before, reboots included).
        The proposal is in L3 before its id is returned. ``scope="cluster"``: voted on from every
        host (nt_memory/cluster/consensus.py); its id starts with ``cluster-``."""
        if scope != "local":
            return self._scope(scope).submit_proposal(proposal)
        q, deadline = checked_proposal(proposal)
        try:
            blob = json.dumps({"proposer": proposal.proposer, "data": proposal.data, "quorum": q})
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"proposal data must be JSON-able: {exc}") from None
        self._lock()
        try:
            pid = int(self.words[C_NEXT_ID]) + 1
            if pid > int(self.words[C_ID_LIMIT]):
                KW.store_word(self.words, C_ID_LIMIT, self.l3.reserve(ID_KEY, pid, ID_BLOCK))
            self.l3.write([("consensus", f"proposal/{pid}".encode(), blob.encode())])
            b = self._pbase + (pid % MAX_PROPOSALS) * PROPOSAL_WORDS
            row = np.zeros(PROPOSAL_WORDS, np.int64)  # composed here, stored in one call
            row[P_STATUS] = ConsensusStatus.PENDING
            row[P_QUORUM] = L.float_word(q)
            row[P_DEADLINE] = deadline
            row[P_ID] = pid
            KW.store_words(self.words, b, row)
            KW.store_word(self.words, C_NEXT_ID, pid)
        finally:
            self._unlock(True)
        return str(pid)

    def _slot(self, proposal_id) -> tuple[int, int]:
        try:
            pid = int(proposal_id)
        except (TypeError, ValueError):
            raise ConsensusError(f"unknown proposal {proposal_id!r}") from None
        if pid <= 0:
            raise ConsensusError(f"unknown proposal {proposal_id!r}")
        b = self._pbase + (pid % MAX_PROPOSALS) * PROPOSAL_WORDS
        return pid, b

    def _result_of(self, pid: int, b: int, status: ConsensusStatus, total: float) -> ConsensusResult:
        return ConsensusResult(
            str(pid),
            status,
            float(self.f64[b + P_APPROVE]),
            float(self.f64[b + P_REJECT]),
            total,
            float(self.f64[b + P_QUORUM]),
            int(self.words[b + P_NVOTES]),
        )

    def _evaluate(self, pid: int, b: int) -> tuple[ConsensusResult, bool]:
        """The result, deciding it (durably: :meth:`_decide`) if the tallies or the clock say so.
        Caller holds the lock. Returns (result, newly decided)."""
        status = ConsensusStatus(int(self.words[b + P_STATUS]))
        if status != ConsensusStatus.PENDING:
            return self._result_of(pid, b, status, float(self.f64[b + P_TOTAL])), False
        total = float(self.f64[C_TOTAL])
        q = float(self.f64[b + P_QUORUM])
        approve, reject = float(self.f64[b + P_APPROVE]), float(self.f64[b + P_REJECT])
        status = decision(approve, reject, total, q, int(self.words[b + P_DEADLINE]))
        result = self._result_of(pid, b, status, total)
        if status == ConsensusStatus.PENDING:
            return result, False
        return self._decide(b, result), True

    def _log(self, result: ConsensusResult) -> ConsensusResult:
        """Write a decision to L3 unless one is there already; returns the one that stands."""
        key = f"decision/{result.proposal_id}".encode()
        blob = json.dumps(result.to_json()).encode()
        stored = self.l3.update("consensus", key, lambda old: ... if old is not None else blob)
        if stored is ...:
            return self._from_log(int(result.proposal_id))
        return result

    def _from_log(self, pid: int) -> ConsensusResult:
        raw = self.l3.get("consensus", f"decision/{pid}".encode())
        if raw is None:
            proposal = self.l3.get("consensus", f"proposal/{pid}".encode())
            if proposal is None:
                raise ConsensusError(f"unknown proposal {pid}")
            # Submitted, never decided, and no longer in shared memory (a reboot, or more than
            # MAX_PROPOSALS newer proposals): it can receive no more votes, so it has expired.
            q = json.loads(proposal).get("quorum", 0.0)
            return self._log(ConsensusResult(str(pid), ConsensusStatus.EXPIRED, 0.0, 0.0, 0.0, float(q), 0))
        d = json.loads(raw)
        return ConsensusResult(**(d | {"status": ConsensusStatus[d["status"]]}))

    def vote(self, vote: Vote) -> ConsensusResult:
        """Count ``vote`` (with the voter's registered weight) and return the proposal's result.
        ``ConsensusError`` for an unknown proposal or voter, a second vote by the same voter, or a
        ``weight`` that differs from the registered one. A decision it causes is in L3 before this
        returns (and before any other process can see it)."""
        if not isinstance(vote, Vote):
            raise ConfigError(f"vote takes a Vote, got {type(vote).__name__}")
        remote = self.scope_of(vote.proposal_id)
        if remote is not None:
            return remote.vote(vote)
        raw = agent_name(vote.voter, "voter")
        pid, b = self._slot(vote.proposal_id)
        self._lock()
        changed = newly = False
        try:
            if int(self.words[b + P_ID]) != pid:
                raise ConsensusError(f"unknown proposal {vote.proposal_id!r} (decided ones: use result())")
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
                        (tally, L.float_word(float(self.f64[tally]) + weight)),
                    ]
                )
                changed = True
                result, newly = self._evaluate(pid, b)
        finally:
            self._unlock(changed or newly)
        return result

    # ------------------------------------------------------------------------- the Part protocol
    def stats(self) -> dict:
        """Voters, their total weight, and the proposals still held here: open ones in full."""
        f64 = self.f64
        open_ = []
        decided = 0
        for i in range(MAX_PROPOSALS):
            b = self._pbase + i * PROPOSAL_WORDS
            if not int(self.words[b + P_ID]):
                continue
            if int(self.words[b + P_STATUS]) != ConsensusStatus.PENDING:
                decided += 1
                continue
            open_.append(
                {
                    "id": int(self.words[b + P_ID]),
                    "approve": float(f64[b + P_APPROVE]),
                    "reject": float(f64[b + P_REJECT]),
                    "quorum": float(f64[b + P_QUORUM]),
                    "votes": int(self.words[b + P_NVOTES]),
                }
            )
        return {
            "voters": int(self.words[C_NVOTERS]),
            "total_weight": float(f64[C_TOTAL]),
            "next_id": int(self.words[C_NEXT_ID]),
            "decided_held": decided,
            "open": open_,
        }

    def verify(self) -> list[str]:
        """The control words, every voter and every proposal held: counts within their limits,
        weights finite and non-negative, tallies within the total, statuses known. Reads only."""
        w, f64 = self.words, self.f64
        problems = []
        nv, redo = int(w[C_NVOTERS]), int(w[C_REDO_COUNT])
        if not 0 <= nv <= MAX_VOTERS or not 0 <= redo <= REDO_MAX or int(w[C_NEXT_ID]) > int(w[C_ID_LIMIT]):
            problems.append(f"consensus control: voters {nv}, redo {redo}, next id past the reserved limit")
        slots = [self._vbase + i * VOTER_WORDS for i in range(MAX_VOTERS)]
        weights = [float(f64[b + V_WEIGHT]) for b in slots if int(w[b + V_HASH])]
        if len(weights) != nv or not all(math.isfinite(x) and x >= 0 for x in weights):
            problems.append(f"consensus voters: {len(weights)} voter slots for a count of {nv}, or a weight impossible")
        elif not math.isclose(sum(weights), float(f64[C_TOTAL]), rel_tol=1e-9, abs_tol=1e-9):
            problems.append(f"consensus voters: weights add up to {sum(weights):g}, the total says {f64[C_TOTAL]:g}")
        statuses = {int(s) for s in ConsensusStatus}
        for i in range(MAX_PROPOSALS):
            b = self._pbase + i * PROPOSAL_WORDS
            pid = int(w[b + P_ID])
            if not pid:
                continue
            tally = float(f64[b + P_APPROVE]) + float(f64[b + P_REJECT])
            sound = pid % MAX_PROPOSALS == i and int(w[b + P_STATUS]) in statuses
            if not sound or not 0 <= tally <= sum(weights) + 1e-6:
                problems.append(f"proposal slot {i}: id {pid}, status {int(w[b + P_STATUS])}, tally {tally:g}")
        return problems

    def close(self) -> None:
        """Nothing to release: the views go with the system's segments."""

    def proposal_ids(self) -> list[str]:
        """Ids of the proposals still held in shared memory (the newest MAX_PROPOSALS)."""
        last = int(self.words[C_NEXT_ID])
        return [
            str(i)
            for i in range(max(1, last - MAX_PROPOSALS + 1), last + 1)
            if int(self.words[self._pbase + (i % MAX_PROPOSALS) * PROPOSAL_WORDS + P_ID]) == i
        ]

    def result(self, proposal_id: str) -> ConsensusResult:
        """The proposal's result, from shared memory or, once it has left it, from L3."""
        remote = self.scope_of(proposal_id)
        if remote is not None:
            return remote.result(proposal_id)
        pid, b = self._slot(proposal_id)
        self._lock()
        newly = False
        try:
            if int(self.words[b + P_ID]) == pid:
                result, newly = self._evaluate(pid, b)
                return result
        finally:
            self._unlock(newly)
        return self._from_log(pid)

    def wait(self, proposal_id: str, timeout: Duration | None = None) -> ConsensusResult:
        """Return as soon as the proposal is decided (or expires); the pending result when
        ``timeout`` (seconds or timedelta) passes first."""
        remote = self.scope_of(proposal_id)
        if remote is not None:
            return remote.wait(proposal_id, timeout)
        timeout = seconds(timeout, "timeout", allow_zero=True)
        return run_sleeps(self._wait_steps(proposal_id, None if timeout is None else time.monotonic() + timeout))

    async def wait_async(self, proposal_id: str, timeout: Duration | None = None) -> ConsensusResult:
        """:meth:`wait` for coroutines: sleeps in the process's waker thread, not the loop's."""
        timeout = seconds(timeout, "timeout", allow_zero=True)
        return await arun_sleeps(self._wait_steps(proposal_id, None if timeout is None else time.monotonic() + timeout))

    def _wait_steps(self, proposal_id: str, deadline: float | None) -> WaitSteps[ConsensusResult]:
        """The wait for a decision, as a wait generator (shm/wait.py) on the table's notify word."""
        while True:
            seen = KW.word_load(self.notify_addr)
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
            yield ((self.notify_addr, seen),), step
