"""Verdicts: how well a trajectory's predictions matched what happened.

Compatible with the seed: predictions and outcomes are paired in order; error =
|pred - actual| / max(|actual|, 1e-10), averaged; **Correct** if avg <= ``correct_tolerance``
(0.05), **VeryWrong** if >= ``very_wrong_threshold`` (0.25), else **Incorrect**; **Insufficient**
when nothing pairs; accuracy = 1 - min(avg, 1); confidence = min(pairs / 10, 1). Beyond the seed,
direction: whether each prediction got the sign of the move right, measured from the reference
price (the action's ``reference`` parameter, else the last numeric ``price``/``value`` observed
before it). ``score`` = accuracy, in [0, 1].

The judge is pluggable: anything callable as ``judge(trajectory) -> VerdictResult`` (an LLM judge,
say) can replace :class:`VerdictJudge` wherever a judge is taken.
"""

from __future__ import annotations

import dataclasses
import enum

from nt_memory.errors import ConfigError
from nt_memory.reasoningbank.trajectory import ACTION, OBSERVATION, Trajectory


class Verdict(enum.Enum):
    CORRECT = "Correct"
    INCORRECT = "Incorrect"
    VERY_WRONG = "VeryWrong"
    INSUFFICIENT = "Insufficient"


@dataclasses.dataclass(frozen=True)
class VerdictResult:
    verdict: Verdict
    error: float
    accuracy: float
    confidence: float
    score: float
    pairs: int
    direction_correct: float | None  # the fraction of pairs whose move had the right sign
    feedback: str

    @property
    def success(self) -> bool:
        return self.verdict == Verdict.CORRECT


def _reference(obs_data) -> float | None:
    if isinstance(obs_data, int | float) and not isinstance(obs_data, bool):
        return float(obs_data)
    if isinstance(obs_data, dict):
        for k in ("price", "value", "reference"):
            v = obs_data.get(k)
            if isinstance(v, int | float) and not isinstance(v, bool):
                return float(v)
    return None


class VerdictJudge:
    """The numeric judge of the seed (see the module docstring)."""

    def __init__(self, correct_tolerance: float = 0.05, very_wrong_threshold: float = 0.25):
        if not 0 <= correct_tolerance < very_wrong_threshold:
            raise ConfigError(
                f"need 0 <= correct_tolerance ({correct_tolerance}) < very_wrong_threshold ({very_wrong_threshold})"
            )
        self.correct_tolerance = correct_tolerance
        self.very_wrong_threshold = very_wrong_threshold

    def __call__(self, trajectory: Trajectory) -> VerdictResult:
        return self.judge(trajectory)

    def judge(self, trajectory: Trajectory) -> VerdictResult:
        preds, refs = [], []
        last_ref = None
        for s in trajectory.steps:
            if s.kind == OBSERVATION:
                r = _reference(s.data)
                last_ref = r if r is not None else last_ref
            elif s.kind == ACTION and s.predicted_outcome is not None:
                ref = s.parameters.get("reference") if isinstance(s.parameters, dict) else None
                preds.append(s.predicted_outcome)
                refs.append(float(ref) if isinstance(ref, int | float) else last_ref)
        outcomes = trajectory.outcomes()
        n = min(len(preds), len(outcomes))
        if n == 0:
            return VerdictResult(
                Verdict.INSUFFICIENT, 0.0, 0.0, 0.0, 0.0, 0, None, "no prediction could be paired with an outcome"
            )
        errors = [abs(p - a) / max(abs(a), 1e-10) for p, a in zip(preds[:n], outcomes[:n], strict=True)]
        avg = sum(errors) / n
        accuracy = 1.0 - min(avg, 1.0)
        confidence = min(n / 10, 1.0)
        if avg <= self.correct_tolerance:
            verdict = Verdict.CORRECT
        elif avg >= self.very_wrong_threshold:
            verdict = Verdict.VERY_WRONG
        else:
            verdict = Verdict.INCORRECT
        dirs = [
            (p - r > 0) == (a - r > 0)
            for p, a, r in zip(preds[:n], outcomes[:n], refs[:n], strict=True)
            if r is not None and p != r and a != r
        ]
        direction = sum(dirs) / len(dirs) if dirs else None
        feedback = f"{verdict.value}: mean error {avg:.1%} over {n} prediction{'s' if n > 1 else ''}" + (
            f"; direction right {direction:.0%} of the time" if direction is not None else ""
        )
        return VerdictResult(verdict, avg, accuracy, confidence, accuracy, n, direction, feedback)
