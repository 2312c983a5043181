"""Trajectories: what an agent saw, did and got, in order.

t = Trajectory("agent_1")
t.add_observation({"price": 100.0}, embedding=vec)
t.add_action("buy", {"quantity": 10}, predicted_outcome=110.0)
t.add_outcome(105.0)
t.complete()
mem.track_trajectory(t)
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import uuid
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from nt_memory.errors import ConfigError, InvalidEmbedding

OBSERVATION = "observation"
ACTION = "action"
OUTCOME = "outcome"


def _finite(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ConfigError(f"{what} must be a finite number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{what} must be a finite number, got {value!r}")
    return value


def _embedding(vec) -> list[float] | None:
    if vec is None:
        return None
    arr = np.asarray(vec)
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "fiu" or arr.dtype == np.bool_:
        raise InvalidEmbedding(
            f"an observation embedding must be a 1-D array of floats (or integers), got {arr.dtype} {arr.shape}"
        )
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise InvalidEmbedding("an observation embedding has NaN or infinite components")
    return arr.tolist()


@dataclasses.dataclass
class Step:
    kind: str
    at_ns: int
    data: object = None
    embedding: list[float] | None = None
    action_type: str | None = None
    parameters: object = None
    predicted_outcome: float | None = None
    value: float | None = None


class Trajectory:
    """One decision path of one agent. Mutable until :meth:`complete`; JSON round-trips."""

    def __init__(self, agent_id: str, id: str | None = None):
        if not isinstance(agent_id, str) or not agent_id:
            raise ConfigError(f"agent_id={agent_id!r} must be a non-empty str")
        self.agent_id = agent_id
        self.id = id or uuid.uuid4().hex
        self.created_ns = time.time_ns()
        self.completed_ns = 0
        self.steps: list[Step] = []

    def _check_open(self) -> None:
        if self.completed_ns:
            raise ConfigError(f"trajectory {self.id} is complete: it cannot take more steps")

    def add_observation(self, data: Any, embedding: ArrayLike | None = None) -> Trajectory:
        self._check_open()
        json.dumps(data)  # must be JSON-able; raises TypeError otherwise
        self.steps.append(Step(OBSERVATION, time.time_ns(), data=data, embedding=_embedding(embedding)))
        return self

    def add_action(
        self, action_type: str, parameters: Any = None, predicted_outcome: float | None = None
    ) -> Trajectory:
        self._check_open()
        if not isinstance(action_type, str) or not action_type:
            raise ConfigError(f"action_type={action_type!r} must be a non-empty str")
        json.dumps(parameters)
        pred = None if predicted_outcome is None else _finite(predicted_outcome, "predicted_outcome")
        self.steps.append(
            Step(ACTION, time.time_ns(), action_type=action_type, parameters=parameters, predicted_outcome=pred)
        )
        return self

    def add_outcome(self, value: float) -> Trajectory:
        self._check_open()
        self.steps.append(Step(OUTCOME, time.time_ns(), value=_finite(value, "outcome")))
        return self

    def complete(self) -> Trajectory:
        if not self.completed_ns:
            self.completed_ns = time.time_ns()
        return self

    @property
    def is_complete(self) -> bool:
        return bool(self.completed_ns)

    # --------------------------------------------------------------------------------- views
    def observations(self) -> list[Step]:
        return [s for s in self.steps if s.kind == OBSERVATION]

    def actions(self) -> list[Step]:
        return [s for s in self.steps if s.kind == ACTION]

    def outcomes(self) -> list[float]:
        return [s.value for s in self.steps if s.kind == OUTCOME and s.value is not None]

    def predictions(self) -> list[float]:
        return [s.predicted_outcome for s in self.steps if s.kind == ACTION and s.predicted_outcome is not None]

    def score(self) -> float | None:
        """The seed's score: the mean of the outcomes, or None before the first (the judge's score,
        how well the predictions matched, is on the verdict: ``VerdictResult.score``)."""
        outs = self.outcomes()
        return sum(outs) / len(outs) if outs else None

    def embedding(self) -> np.ndarray | None:
        """The mean of the observation embeddings (the situation), or None."""
        vecs = [s.embedding for s in self.steps if s.kind == OBSERVATION and s.embedding is not None]
        return np.mean(np.asarray(vecs, np.float32), axis=0) if vecs else None

    def main_action(self) -> str | None:
        acts = self.actions()
        return acts[0].action_type if acts else None

    # ---------------------------------------------------------------------------------- JSON
    def to_json(self) -> dict:
        return {
            "id": self.id,
            "agent_id": self.agent_id,
            "created_ns": self.created_ns,
            "completed_ns": self.completed_ns,
            "steps": [{k: v for k, v in dataclasses.asdict(s).items() if v is not None} for s in self.steps],
        }

    @classmethod
    def from_json(cls, d: dict) -> Trajectory:
        t = cls(d["agent_id"], d["id"])
        t.created_ns = d["created_ns"]
        t.completed_ns = d["completed_ns"]
        t.steps = [Step(**s) for s in d["steps"]]
        return t

    def __repr__(self) -> str:
        state = "complete" if self.completed_ns else "active"
        return f"<Trajectory {self.id[:8]} agent={self.agent_id} steps={len(self.steps)} {state}>"
