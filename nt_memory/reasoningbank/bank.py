"""The ReasoningBank of a memory system (``mem.bank``): track, judge, distill, retrieve, learn.

Trajectories and patterns live in L3 (``trajectories`` and ``patterns`` databases, compressed with
``enable_compression``), so every attached process sees the same bank. Pattern centroids are
indexed in L2 under the namespace ``__reasoningbank``.

Retrieval ranks the nearest patterns by

    score = 0.60 * similarity + 0.25 * confidence + 0.15 * recency

where similarity is the cosine to the query, confidence the Laplace-smoothed success rate, and
recency = 0.5 ** (age / 1 day) of the pattern's last update or use. A diversity pass then skips a
pattern whose centroid has cosine >= 0.95 to an already chosen pattern with the same action.
New verdicts update the pattern they match: a success moves its confidence up, a failure down.
:meth:`consolidate` merges near-duplicates (cosine >= 0.95, same action) and flags contradictions
(same situation, different actions, both judged successful). It also forgets patterns that stay
unused and unsuccessful. It runs every ``consolidate_every`` new trajectories and on demand.

Threads and processes: every method may be called from any thread of any process that has the
system open. A verdict's update of a pattern is one read-modify-write transaction in L3, so two
agents judged at once both count; ``distill`` and ``consolidate`` rewrite the pattern set and are
serialised within a process (across processes the last one's set stands).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from nt_memory.errors import ConfigError, InvalidEmbedding
from nt_memory.reasoningbank.distill import MemoryDistiller, Pattern, _unit
from nt_memory.reasoningbank.trajectory import Trajectory
from nt_memory.reasoningbank.verdict import VerdictJudge, VerdictResult
from nt_memory.tiers.l3 import pack_kv, unpack_kv

NAMESPACE = "__reasoningbank"
USAGE_NAMESPACE = "__reasoningbank_usage"  # [uses, last_used_ns] per pattern, via the journal
W_SIMILARITY, W_CONFIDENCE, W_RECENCY = 0.60, 0.25, 0.15
RECENCY_HALF_LIFE_NS = 86_400 * 10**9
DUPLICATE_COSINE = 0.95
MATCH_COSINE = 0.85
FORGET_AFTER_NS = 7 * 86_400 * 10**9


class ReasoningBank:
    def __init__(
        self, mem: Any, judge: Any = None, distiller: MemoryDistiller | None = None, consolidate_every: int = 50
    ) -> None:
        self.mem = mem
        self.store = mem.store
        self.judge = judge or VerdictJudge()
        self.distiller = distiller or MemoryDistiller()
        self.consolidate_every = consolidate_every
        self._since_consolidation = 0
        self._lock = threading.RLock()

    # --------------------------------------------------------------------------- storage
    def _put(self, db: str, key: str, obj: dict) -> None:
        raw = json.dumps(obj, separators=(",", ":")).encode()
        self.store.write([(db, key.encode(), pack_kv(raw, 0, self.mem.compression))])

    def _load(self, db: str, prefix: str = ""):
        for _k, raw in self.store.items(db, prefix.encode()):
            body, _ = unpack_kv(raw)
            yield json.loads(bytes(body))

    # ------------------------------------------------------------------------ trajectories
    def track(self, t: Trajectory) -> VerdictResult | None:
        """Store ``t``. One with outcomes is completed (the seed's flow: observe, act, record the
        outcome, track) and judged, and its verdict updates the pattern it matches. Returns the
        verdict, or None for a trajectory with no outcome yet (stored as active)."""
        if not isinstance(t, Trajectory):
            raise ConfigError(f"track_trajectory takes a Trajectory, got {type(t).__name__}")
        dim = self.mem.embedding_dim
        for s in t.observations():
            if s.embedding is not None and len(s.embedding) != dim:
                raise InvalidEmbedding(
                    f"observation embedding has {len(s.embedding)} components; embedding_dim is {dim}"
                )
        if not t.is_complete and t.outcomes():
            t.complete()
        self._put("trajectories", f"{t.agent_id}\0{t.id}", t.to_json())
        if not t.is_complete:
            return None
        verdict = self.judge(t)
        self._feedback(t, verdict)
        with self._lock:
            self._since_consolidation += 1
            due = self._since_consolidation >= self.consolidate_every
        if due:
            self.consolidate()
        return verdict

    def complete(self, agent_id: str, trajectory_id: str) -> VerdictResult:
        """Complete a tracked trajectory by id (from any process)."""
        raw = self.store.get("trajectories", f"{agent_id}\0{trajectory_id}".encode())
        if raw is None:
            raise ConfigError(f"no trajectory {trajectory_id!r} of agent {agent_id!r} is tracked")
        t = Trajectory.from_json(json.loads(bytes(unpack_kv(raw)[0])))
        verdict = self.track(t.complete())
        if verdict is None:  # track judges every complete trajectory
            raise ConfigError(f"trajectory {trajectory_id!r} of agent {agent_id!r} could not be judged")
        return verdict

    def trajectories(self, agent_id: str | None = None, completed: bool | None = None) -> list[Trajectory]:
        """Tracked trajectories (of one agent, active or complete only), from any process."""
        out = [Trajectory.from_json(d) for d in self._load("trajectories", f"{agent_id}\0" if agent_id else "")]
        if completed is not None:
            out = [t for t in out if t.is_complete == completed]
        return sorted(out, key=lambda t: t.created_ns)

    # ----------------------------------------------------------------------------- patterns
    def _with_usage(self, p: Pattern) -> Pattern:
        usage = self.mem.get(USAGE_NAMESPACE, p.id)
        if usage:
            p.uses = max(p.uses, usage[0])
            p.last_used_ns = max(p.last_used_ns, usage[1])
        return p

    def patterns(self) -> list[Pattern]:
        return [self._with_usage(Pattern.from_json(d)) for d in self._load("patterns")]

    def _save_pattern(self, p: Pattern) -> None:
        self._put("patterns", p.id, p.to_json())
        self.mem.put(NAMESPACE, p.id, {"action": p.action}, embedding=np.asarray(p.centroid, np.float32))

    def _drop_pattern(self, p: Pattern) -> None:
        self.store.write([("patterns", p.id.encode(), None)])
        self.mem.delete(NAMESPACE, p.id)

    def distill(self) -> list[Pattern]:
        """Judge every complete trajectory and distill situation patterns across agents; replaces
        the bank's patterns. Returns them."""
        with self._lock:
            ts = self.trajectories(completed=True)
            verdicts = {t.id: self.judge(t) for t in ts}
            new = self.distiller.merge_similar(self.distiller.distill_situations(ts, verdicts), DUPLICATE_COSINE)
            for p in self.patterns():
                self._drop_pattern(p)
            for p in new:
                self._save_pattern(p)
            return new

    def _feedback(self, t: Trajectory, verdict: VerdictResult) -> None:
        emb = t.embedding()
        action = t.main_action()
        if emb is None or action is None or verdict.pairs == 0:
            return
        for hit in self.mem.search_similar(NAMESPACE, _unit(emb), top_k=5):
            if 1 - hit.distance < MATCH_COSINE:
                continue

            def update(raw, hit=hit):
                if raw is None:
                    return ...
                p = Pattern.from_json(json.loads(bytes(unpack_kv(raw)[0])))
                if p.action != action:
                    return ...
                if verdict.success:
                    p.successes += 1
                else:
                    p.failures += 1
                if t.id not in p.trajectory_ids:
                    p.trajectory_ids.append(t.id)
                p.pitfall = p.success_rate < 0.5
                p.updated_ns = time.time_ns()
                p.describe()
                return pack_kv(json.dumps(p.to_json(), separators=(",", ":")).encode(), 0, self.mem.compression)

            # One transaction: an update by another agent in between is never lost.
            if self.store.update("patterns", hit.key.encode(), update) is not ...:
                return

    # ---------------------------------------------------------------------------- retrieval
    def retrieve(self, embedding: ArrayLike, top_k: int = 3, include_pitfalls: bool = True) -> list[Pattern]:
        """The ``top_k`` patterns most relevant to a situation (see the module docstring)."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ConfigError(f"top_k={top_k!r} must be a positive integer")
        q = _unit(np.asarray(embedding, np.float32))
        now = time.time_ns()
        scored = []
        for hit in self.mem.search_similar(NAMESPACE, q, top_k=top_k * 4):
            raw = self.store.get("patterns", hit.key.encode())
            if raw is None:
                continue
            p = Pattern.from_json(json.loads(bytes(unpack_kv(raw)[0])))
            if p.pitfall and not include_pitfalls:
                continue
            sim = float(_unit(p.vector()) @ q)
            age = now - max(p.updated_ns, p.last_used_ns)
            recency = 0.5 ** (age / RECENCY_HALF_LIFE_NS)
            scored.append((W_SIMILARITY * sim + W_CONFIDENCE * p.confidence + W_RECENCY * recency, p))
        scored.sort(key=lambda x: -x[0])
        chosen: list[Pattern] = []
        for _, p in scored:
            v = _unit(p.vector())
            if any(c.action == p.action and float(_unit(c.vector()) @ v) >= DUPLICATE_COSINE for c in chosen):
                continue
            chosen.append(p)
            if len(chosen) == top_k:
                break
        for p in chosen:
            self._with_usage(p)
            # Usage goes through the write-behind journal: a retrieval must not wait for a disk
            # commit (it did, at ~3 ms a call over 100k patterns).
            p.uses += 1
            p.last_used_ns = now
            self.mem.put(USAGE_NAMESPACE, p.id, [p.uses, now])
        return chosen

    # ------------------------------------------------------------------------ consolidation
    def consolidate(self) -> dict:
        """Merge near-duplicates, flag contradictions, forget unused failures. Returns counts."""
        with self._lock:
            return self._consolidate()

    def _consolidate(self) -> dict:
        self._since_consolidation = 0
        before = self.patterns()
        merged = self.distiller.merge_similar(before, DUPLICATE_COSINE)
        now = time.time_ns()
        kept = [
            p
            for p in merged
            if not (p.uses == 0 and p.successes == 0 and p.failures >= 3 and now - p.created_ns > FORGET_AFTER_NS)
        ]
        contradictions = 0
        for p in kept:
            p.contradicts = []
        for i, a in enumerate(kept):
            for b in kept[i + 1 :]:
                if (
                    a.action != b.action
                    and a.success_rate >= 0.5
                    and b.success_rate >= 0.5
                    and float(_unit(a.vector()) @ _unit(b.vector())) >= DUPLICATE_COSINE
                ):
                    a.contradicts.append(b.id)
                    b.contradicts.append(a.id)
                    contradictions += 1
        kept_ids = {p.id for p in kept}
        for p in before:
            if p.id not in kept_ids:
                self._drop_pattern(p)
        for p in kept:
            self._save_pattern(p)
        return {"before": len(before), "after": len(kept), "contradictions": contradictions}
