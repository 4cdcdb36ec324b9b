"""Reputation from observed outcomes only, decaying toward a neutral prior.

Formula (a Beta-style mean with time-decayed evidence)::

    good = sum over completions of 2 ** (-age / half_life_s)
    bad  = sum over bad outcomes of weight(kind) * 2 ** (-age / half_life_s)
    reputation = (good + prior * prior_strength) / (good + bad + prior_strength)

with ``weight`` = 1 for failure, timeout, disconnect and node-caused cancel, and 3 for a
token-count mismatch (a billing-integrity problem, not just an availability one). With no
evidence, or once evidence has decayed, reputation is the ``prior`` (0.5). A node is in
*probation* until it has ``probation_completions`` completions (counted without decay: probation
is about having been measured at all).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from scheduler.measurements import DecayingCount

__all__ = ["OUTCOME_WEIGHTS", "Outcome", "Reputation", "ReputationBook"]

Outcome = Literal["completion", "failure", "timeout", "disconnect", "node_cancel", "token_mismatch"]
OUTCOME_WEIGHTS: dict[Outcome, float] = {
    "completion": 1.0,
    "failure": 1.0,
    "timeout": 1.0,
    "disconnect": 1.0,
    "node_cancel": 1.0,
    "token_mismatch": 3.0,
}


@dataclass
class Reputation:
    """One node's reputation (across models)."""

    half_life_s: float = 86_400.0
    prior: float = 0.5
    prior_strength: float = 10.0
    probation_completions: int = 10
    completions_total: int = 0
    good: DecayingCount = field(init=False)
    bad: DecayingCount = field(init=False)
    by_outcome: dict[Outcome, DecayingCount] = field(init=False)
    """Decayed count of each outcome (unweighted): the inputs an operator sees."""

    def __post_init__(self) -> None:
        self.good = DecayingCount(self.half_life_s)
        self.bad = DecayingCount(self.half_life_s)
        self.by_outcome = {}

    def record(self, outcome: Outcome, now_s: float) -> None:
        if outcome == "completion":
            self.good.add(1.0, now_s)
            self.completions_total += 1
        else:
            self.bad.add(OUTCOME_WEIGHTS[outcome], now_s)
        count = self.by_outcome.get(outcome)
        if count is None:
            count = self.by_outcome[outcome] = DecayingCount(self.half_life_s)
        count.add(1.0, now_s)

    def inputs(self, now_s: float) -> dict[str, float]:
        """The decayed evidence behind :meth:`score`, for explanations."""
        return {
            "good": round(self.good.value(now_s), 3),
            "bad_weighted": round(self.bad.value(now_s), 3),
            **{kind: round(c.value(now_s), 3) for kind, c in sorted(self.by_outcome.items())},
            "completions_total": self.completions_total,
        }

    def score(self, now_s: float) -> float:
        """In ``[0, 1]``; ``prior`` with no (or fully decayed) evidence."""
        good, bad = self.good.value(now_s), self.bad.value(now_s)
        return (good + self.prior * self.prior_strength) / (good + bad + self.prior_strength)

    @property
    def in_probation(self) -> bool:
        return self.completions_total < self.probation_completions


@dataclass
class ReputationBook:
    half_life_s: float = 86_400.0
    probation_completions: int = 10
    _entries: dict[str, Reputation] = field(default_factory=dict)

    def of(self, node_id: str) -> Reputation:
        entry = self._entries.get(node_id)
        if entry is None:
            entry = self._entries[node_id] = Reputation(
                self.half_life_s, probation_completions=self.probation_completions
            )
        return entry

    def get(self, node_id: str) -> Reputation | None:
        return self._entries.get(node_id)

    def forget_node(self, node_id: str) -> None:
        self._entries.pop(node_id, None)
