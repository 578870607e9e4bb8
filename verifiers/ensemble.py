"""A verifier ensemble (FETCH): the mean of several verifiers' step scores, which lowers their variance."""

from __future__ import annotations

from collections.abc import Sequence

from reasoner.core.types import Node


class EnsembleVerifier:
    def __init__(self, members: list):
        if len(members) < 2:
            raise ValueError(f"an ensemble verifier needs at least two members in verifier.members, got {len(members)}")
        self.members = members
        self.name = "ensemble(" + ",".join(m.name for m in members) + ")"

    def score_paths(self, nodes: Sequence[Node]) -> list[list[float]]:
        per_member = [m.score_paths(nodes) for m in self.members]
        return [[sum(col) / len(col) for col in zip(*rows)] for rows in zip(*per_member)]
