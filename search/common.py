"""Helpers every tree search shares: uneven batched expansion, aggregated verifier scores, leaves."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

from reasoner.core.types import Node
from verifiers.base import aggregate


def expand_counts(engine, pairs: Sequence[tuple[Node, int]]) -> list[list[Node]]:
    """Children for every ``(node, k)``: one ``engine.expand`` call per distinct ``k`` (all problems together)."""
    by_k: dict[int, list[int]] = defaultdict(list)
    for i, (_, k) in enumerate(pairs):
        if k > 0:
            by_k[k].append(i)
    out: list[list[Node]] = [[] for _ in pairs]
    for k, idx in by_k.items():
        for i, children in zip(idx, engine.expand([pairs[i][0] for i in idx], k)):
            out[i] = children
    return out


def path_scores(verifier, nodes: Sequence[Node], how: str) -> list[float]:
    """Each node's path score: the verifier's step scores aggregated (last / min / prod / mean)."""
    if not nodes:
        return []
    return [aggregate(s, how) for s in verifier.score_paths(list(nodes))]


def leaves(node: Node) -> Iterator[Node]:
    if not node.children:
        yield node
    for child in node.children:
        yield from leaves(child)


def ranked(nodes: Sequence[Node], scores: Sequence[float]) -> list[tuple[Node, float]]:
    """Nodes best first (stable: equal scores keep their order)."""
    return sorted(zip(nodes, scores), key=lambda p: -p[1])
