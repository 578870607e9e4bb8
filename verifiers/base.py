"""The step verifier interface and the aggregation of step scores into a trajectory score."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

from reasoner.core.types import Node

AGGREGATIONS = ("last", "min", "prod", "mean")


class Verifier(Protocol):
    """Scores reasoning steps in the context of their path. Scores lie in [0, 1] (1 = surely right) and are
    cached in ``step.scores[name]``, so a step is scored once however many trajectories share it."""

    name: str

    def score_paths(self, nodes: Sequence[Node]) -> list[list[float]]:
        """The score of every step on each node's path (root excluded)."""


def aggregate(scores: Sequence[float], how: str) -> float:
    """One trajectory score from its step scores (search-and-learn's last / min / prod, plus mean)."""
    if not scores:
        return 0.0
    if how == "last":
        return scores[-1]
    if how == "min":
        return min(scores)
    if how == "prod":
        return math.prod(scores)
    if how == "mean":
        return sum(scores) / len(scores)
    raise ValueError(f"unknown aggregation {how!r}: use one of {', '.join(AGGREGATIONS)}")
