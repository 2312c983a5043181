"""``scope="cluster"`` consensus: proposals and their tallies in the swarm's bucket, counted from
every host by compare-and-set.

The voters of the cluster are one entry (``voters``: name -> weight); a proposal is one entry
(``p.<id>``: its data, quorum, deadline, every vote and, once decided, the decision). A vote reads
the proposal, adds itself and writes it back conditional on the revision read, retrying on a
conflict, so concurrent votes from any number of hosts are each counted once. The rules are the
local ones (nt_memory/coordination/consensus.py): Approved once the approving weight reaches
``quorum`` x the total registered weight, Rejected once it can no longer, Expired at the deadline;
the decision is written into the entry by the same compare-and-set, so it is durable (replicated
by JetStream) before anyone is told, and a decided result never changes.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time

from nt_memory.cluster.client import ClusterClient
from nt_memory.coordination.consensus import (
    EPSILON,
    ConsensusResult,
    ConsensusStatus,
    Proposal,
    Vote,
    agent_name,
    check_weight,
    checked_proposal,
    decision,
)
from nt_memory.durations import seconds
from nt_memory.errors import ConfigError, ConsensusError

ID_PREFIX = "cluster-"  # cluster proposal ids; local ones are numbers
PROPOSAL_KEY_PREFIX = "p."
VOTERS_KEY = "voters"
POLL_S = 0.02  # wait()'s look at the entry


class ClusterConsensus:
    def __init__(self, client: ClusterClient):
        self.client = client
        self.votes_counted = 0
        self.conflicts = 0  # compare-and-set retries (votes from elsewhere at the same moment)

    def call(self, coro):
        return self.client.call(coro, 30.0)

    @staticmethod
    def owns(proposal_id: object) -> bool:
        return isinstance(proposal_id, str) and proposal_id.startswith(ID_PREFIX)

    def _key(self, proposal_id: str) -> str:
        suffix = proposal_id[len(ID_PREFIX) :]
        if not self.owns(proposal_id) or not suffix.isalnum():
            raise ConsensusError(f"unknown cluster proposal {proposal_id!r}")
        return PROPOSAL_KEY_PREFIX + suffix

    # -------------------------------------------------------------------------------- voters
    def register_voter(self, agent_id: str, weight: float = 1.0) -> None:
        """Register (or re-weight) a voter of every host's cluster proposals."""
        name = agent_name(agent_id, "agent_id").decode()
        w = check_weight(weight, "weight")

        def change(voters: dict) -> dict:
            return voters | {name: w}

        self.call(self._update_json(VOTERS_KEY, change, {}))

    def voters(self) -> dict[str, float]:
        return self.call(self._read_json(VOTERS_KEY, {}))[1]

    def total_weight(self) -> float:
        return float(sum(self.voters().values()))

    async def _read_json(self, key: str, default):
        """(revision, value) of a JSON entry; (0, default) if absent."""
        from nats.js.errors import KeyNotFoundError

        try:
            entry = await self.client.kv.get(key)
        except KeyNotFoundError as exc:
            return (int(exc.entry.revision) if exc.entry is not None else 0), default
        try:
            return int(entry.revision), json.loads(entry.value)
        except ValueError:
            raise ConsensusError(f"cluster entry {key!r} is not nt-memory's (not JSON)") from None

    async def _update_json(self, key: str, change, default):
        """Apply ``change`` to a JSON entry by compare-and-set, retrying on conflict; returns what
        ``change`` returned (``change`` may return the value unchanged: then nothing is written)."""
        from nats.js.errors import KeyWrongLastSequenceError

        while True:
            rev, value = await self._read_json(key, default)
            new = change(value)
            if new is value:
                return new
            body = json.dumps(new).encode()
            try:
                if rev:
                    await self.client.kv.update(key, body, last=rev)
                else:
                    await self.client.kv.create(key, body)
                return new
            except KeyWrongLastSequenceError:
                self.conflicts += 1
                await asyncio.sleep(0)

    # ----------------------------------------------------------------------------- proposals
    def submit_proposal(self, proposal: Proposal) -> str:
        """Open ``proposal`` for votes from every host; returns its id (``cluster-...``)."""
        q, deadline_ns = checked_proposal(proposal)
        entry = {
            "proposer": proposal.proposer,
            "data": proposal.data,
            "quorum": q,
            "deadline_ns": deadline_ns,
            "votes": {},
            "decision": None,
        }
        try:
            body = json.dumps(entry).encode()
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"proposal data must be JSON-able: {exc}") from None
        suffix = secrets.token_hex(8)
        self.call(self.client.kv.create(PROPOSAL_KEY_PREFIX + suffix, body))
        return ID_PREFIX + suffix

    def vote(self, vote: Vote) -> ConsensusResult:
        """Count ``vote`` once, from any host; as the local ``vote`` (``ConsensusError`` for an
        unknown proposal or voter, a second vote, a weight other than the registered one)."""
        if not isinstance(vote, Vote):
            raise ConfigError(f"vote takes a Vote, got {type(vote).__name__}")
        voter = agent_name(vote.voter, "voter").decode()
        key = self._key(vote.proposal_id)
        return self.call(self._vote(vote, voter, key))

    async def _vote(self, vote: Vote, voter: str, key: str) -> ConsensusResult:
        _, voters = await self._read_json(VOTERS_KEY, {})
        if voter not in voters:
            raise ConsensusError(f"voter {vote.voter!r} is not registered in the cluster (register_voter first)")
        weight = float(voters[voter])
        if vote.weight is not None and abs(float(vote.weight) - weight) > EPSILON:
            raise ConsensusError(f"vote weight {vote.weight!r} differs from {vote.voter!r}'s registered {weight}")
        total = float(sum(voters.values()))
        outcome: list[ConsensusResult] = []

        def change(entry):
            if entry is None:
                raise ConsensusError(f"unknown cluster proposal {vote.proposal_id!r}")
            outcome.clear()
            if entry["decision"] is not None:
                outcome.append(_result(vote.proposal_id, entry["decision"]))
                return entry
            if voter in entry["votes"]:
                raise ConsensusError(f"{vote.voter!r} has already voted on proposal {vote.proposal_id}")
            decided = _decide(vote.proposal_id, entry, total)
            if decided is None:  # still open: count the vote, then see whether it decides
                entry = entry | {"votes": entry["votes"] | {voter: [bool(vote.approve), weight]}}
                decided = _decide(vote.proposal_id, entry, total)
            if decided is not None:
                entry = entry | {"decision": decided}
            outcome.append(_result(vote.proposal_id, decided or _tally(entry, total)))
            return entry

        await self._update_json(key, change, None)
        self.votes_counted += 1
        return outcome[0]

    def result(self, proposal_id: str) -> ConsensusResult:
        """The proposal's result now (deciding it, durably, if its deadline has passed)."""
        key = self._key(proposal_id)

        async def run():
            total = float(sum((await self._read_json(VOTERS_KEY, {}))[1].values()))
            found: list[ConsensusResult] = []

            def change(entry):
                if entry is None:
                    raise ConsensusError(f"unknown cluster proposal {proposal_id!r}")
                found.clear()
                if entry["decision"] is not None:
                    found.append(_result(proposal_id, entry["decision"]))
                    return entry
                decided = _decide(proposal_id, entry, total)
                found.append(_result(proposal_id, decided or _tally(entry, total)))
                return entry if decided is None else entry | {"decision": decided}

            await self._update_json(key, change, None)
            return found[0]

        return self.call(run())

    def wait(self, proposal_id: str, timeout=None) -> ConsensusResult:
        """Return once the proposal is decided (or expires); the pending result at ``timeout``."""
        limit = seconds(timeout, "timeout", allow_zero=True)
        deadline = None if limit is None else time.monotonic() + limit
        while True:
            result = self.result(proposal_id)
            if result.decided or (deadline is not None and time.monotonic() >= deadline):
                return result
            time.sleep(POLL_S)

    def stats(self) -> dict:
        return {"votes_counted_here": self.votes_counted, "cas_conflicts_here": self.conflicts}


def _tally(entry: dict, total: float) -> dict:
    approve = sum(w for ok, w in entry["votes"].values() if ok)
    reject = sum(w for ok, w in entry["votes"].values() if not ok)
    return {
        "status": ConsensusStatus.PENDING.name,
        "approve": approve,
        "reject": reject,
        "total": total,
        "quorum": entry["quorum"],
        "votes": len(entry["votes"]),
    }


def _decide(proposal_id: str, entry: dict, total: float) -> dict | None:
    """The decision the entry's tallies (or its deadline) make now, or None while it is open."""
    t = _tally(entry, total)
    status = decision(t["approve"], t["reject"], total, entry["quorum"], entry["deadline_ns"])
    return None if status == ConsensusStatus.PENDING else t | {"status": status.name}


def _result(proposal_id: str, t: dict) -> ConsensusResult:
    return ConsensusResult(
        proposal_id,
        ConsensusStatus[t["status"]],
        float(t["approve"]),
        float(t["reject"]),
        float(t["total"]),
        float(t["quorum"]),
        int(t["votes"]),
    )
