"""Distillation: from trajectories to reusable patterns (memory items).

- :meth:`MemoryDistiller.distill`: the seed's behaviour. Per agent with at least
  ``min_trajectories`` trajectories, a pattern whose centroid is the L2-normalised mean of the
  observation embeddings; strength = (mean cosine to the centroid + 1) / 2.
- :meth:`MemoryDistiller.merge_similar`: the seed's merge. Patterns whose centroids have cosine
  >= ``merge_threshold`` (0.8) become one.
- :meth:`MemoryDistiller.distill_situations`: beyond the seed. Trajectories of *all* agents are
  grouped by situation (greedy clustering of their embeddings at cosine >= ``situation_threshold``),
  then by the action taken. Each group becomes a pattern that knows its outcomes: support, success
  rate and mean error from the verdicts. It is written as a memory item in the form of the 2025
  ReasoningBank paper (title, description, content). Groups that mostly failed are kept as
  *pitfalls*.
"""

from __future__ import annotations

import base64
import dataclasses
import time
import uuid
from collections import defaultdict

import numpy as np

from nt_memory.errors import ConfigError
from nt_memory.reasoningbank.trajectory import Trajectory
from nt_memory.reasoningbank.verdict import VerdictResult


def _unit(v) -> np.ndarray:
    v = np.asarray(v, np.float32)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


@dataclasses.dataclass
class Pattern:
    """A distilled memory item. ``confidence`` is the Laplace-smoothed success rate,
    (successes + 1) / (successes + failures + 2): verdicts move it up on success, down on failure."""

    id: str
    centroid: list[float]
    action: str | None = None
    agent_ids: list[str] = dataclasses.field(default_factory=list)
    trajectory_ids: list[str] = dataclasses.field(default_factory=list)
    strength: float = 0.0
    successes: int = 0
    failures: int = 0
    mean_error: float = 0.0
    title: str = ""
    description: str = ""
    content: str = ""
    pitfall: bool = False
    contradicts: list[str] = dataclasses.field(default_factory=list)
    created_ns: int = 0
    updated_ns: int = 0
    last_used_ns: int = 0
    uses: int = 0

    def __post_init__(self):
        if isinstance(self.centroid, str):  # the stored form (see to_json)
            self.centroid = np.frombuffer(base64.b64decode(self.centroid), np.float32).tolist()

    @property
    def support(self) -> int:
        return len(self.trajectory_ids)

    @property
    def success_rate(self) -> float:
        judged = self.successes + self.failures
        return self.successes / judged if judged else 0.0

    @property
    def confidence(self) -> float:
        return (self.successes + 1) / (self.successes + self.failures + 2)

    def vector(self) -> np.ndarray:
        return np.asarray(self.centroid, np.float32)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        # The centroid as base64 float32: a JSON list of floats was most of a retrieval's decode.
        d["centroid"] = base64.b64encode(np.asarray(self.centroid, np.float32).tobytes()).decode()
        return d

    @classmethod
    def from_json(cls, d: dict) -> Pattern:
        return cls(**d)

    def describe(self) -> None:
        verb = "Avoid" if self.pitfall else "Prefer"
        self.title = f"{verb} '{self.action}' in this situation" if self.action else "Recurring situation"
        self.description = (
            f"{self.support} trajectories from {len(set(self.agent_ids))} agent(s); "
            f"success rate {self.success_rate:.0%}, mean prediction error {self.mean_error:.1%}"
        )
        self.content = f"When the situation resembles this one, '{self.action}' " + (
            "failed more often than not: look for another action." if self.pitfall else "worked: it is a good default."
        )


class MemoryDistiller:
    def __init__(self, min_trajectories: int = 3, merge_threshold: float = 0.8, situation_threshold: float = 0.85):
        if min_trajectories < 1 or not 0 < merge_threshold <= 1 or not 0 < situation_threshold <= 1:
            raise ConfigError("min_trajectories >= 1 and thresholds in (0, 1] are required")
        self.min_trajectories = min_trajectories
        self.merge_threshold = merge_threshold
        self.situation_threshold = situation_threshold

    # ------------------------------------------------------------------------------ the seed's
    def distill(self, trajectories: list[Trajectory]) -> list[Pattern]:
        """Per agent (>= ``min_trajectories`` with embeddings): one pattern, the seed's way."""
        by_agent: dict[str, list[Trajectory]] = defaultdict(list)
        for t in trajectories:
            if t.embedding() is not None:
                by_agent[t.agent_id].append(t)
        now = time.time_ns()
        out = []
        for agent, ts in sorted(by_agent.items()):
            if len(ts) < self.min_trajectories:
                continue
            vecs = np.stack([e for t in ts for e in [_unit(s.embedding) for s in t.observations() if s.embedding]])
            centroid = _unit(vecs.mean(axis=0))
            strength = (float(np.mean(vecs @ centroid)) + 1) / 2
            out.append(
                Pattern(
                    id=uuid.uuid4().hex,
                    centroid=centroid.tolist(),
                    agent_ids=[agent],
                    trajectory_ids=[t.id for t in ts],
                    strength=strength,
                    created_ns=now,
                    updated_ns=now,
                    title=f"Pattern of {agent}",
                )
            )
        return out

    def merge_similar(self, patterns: list[Pattern], threshold: float | None = None) -> list[Pattern]:
        """Merge patterns whose centroids have cosine >= ``threshold`` (default ``merge_threshold``)
        and, for situation patterns, the same action."""
        thr = self.merge_threshold if threshold is None else threshold
        merged: list[Pattern] = []
        for p in patterns:
            v = _unit(p.vector())
            for m in merged:
                if m.action == p.action and float(_unit(m.vector()) @ v) >= thr:
                    n1, n2 = max(m.support, 1), max(p.support, 1)
                    m.centroid = _unit((m.vector() * n1 + p.vector() * n2) / (n1 + n2)).tolist()
                    m.strength = (m.strength * n1 + p.strength * n2) / (n1 + n2)
                    m.mean_error = (m.mean_error * n1 + p.mean_error * n2) / (n1 + n2)
                    m.agent_ids = sorted(set(m.agent_ids) | set(p.agent_ids))
                    m.trajectory_ids = m.trajectory_ids + [t for t in p.trajectory_ids if t not in m.trajectory_ids]
                    m.successes += p.successes
                    m.failures += p.failures
                    m.uses += p.uses
                    m.last_used_ns = max(m.last_used_ns, p.last_used_ns)
                    m.updated_ns = time.time_ns()
                    if m.action is not None:
                        m.pitfall = m.success_rate < 0.5
                        m.describe()
                    break
            else:
                merged.append(dataclasses.replace(p))
        return merged

    # ------------------------------------------------------------------------- beyond the seed
    def distill_situations(self, trajectories: list[Trajectory], verdicts: dict[str, VerdictResult]) -> list[Pattern]:
        """Patterns per (situation cluster, action), across agents, with outcome statistics."""
        items = [(t, _unit(t.embedding())) for t in trajectories if t.embedding() is not None and t.main_action()]
        clusters: list[tuple[np.ndarray, list[Trajectory]]] = []
        for t, v in items:
            best, best_sim = -1, -2.0
            for i, (c, _) in enumerate(clusters):
                sim = float(_unit(c) @ v)
                if sim > best_sim:
                    best, best_sim = i, sim
            if best >= 0 and best_sim >= self.situation_threshold:
                c, members = clusters[best]
                members.append(t)
                clusters[best] = (c + (v - c) / len(members), members)
            else:
                clusters.append((v.copy(), [t]))
        now = time.time_ns()
        out = []
        for _, members in clusters:
            by_action: dict[str, list[Trajectory]] = defaultdict(list)
            for t in members:
                by_action[t.main_action() or ""].append(t)  # every item has one (filtered above)
            for action, ts in sorted(by_action.items()):
                vs = [verdicts.get(t.id) for t in ts]
                judged = [v for v in vs if v is not None and v.pairs > 0]
                succ = sum(1 for v in judged if v.success)
                centroid = _unit(np.mean([_unit(t.embedding()) for t in ts], axis=0))
                p = Pattern(
                    id=uuid.uuid4().hex,
                    centroid=centroid.tolist(),
                    action=action,
                    agent_ids=sorted({t.agent_id for t in ts}),
                    trajectory_ids=[t.id for t in ts],
                    strength=(float(np.mean([_unit(t.embedding()) @ centroid for t in ts])) + 1) / 2,
                    successes=succ,
                    failures=len(judged) - succ,
                    mean_error=float(np.mean([v.error for v in judged])) if judged else 0.0,
                    created_ns=now,
                    updated_ns=now,
                )
                p.pitfall = bool(judged) and p.success_rate < 0.5
                p.describe()
                out.append(p)
        return out
