"""Token Recycling (Luo et al. 2024): an adjacency table of the target's top-k successors of every token,
refreshed from every verification forward (all tree positions, accepted or not; kept across calls), expanded
breadth-first into a static tree template. Deterministic drafts.

The template is the ``nodes`` most promising rank paths under a simple prior (the top successor is accepted
far more often than the others); Token Recycling ships a hand-tuned 80-node template instead."""

from __future__ import annotations

import heapq

from ..tree import DraftTree
from .base import Drafter


def rank_template(nodes: int, top_k: int, depth: int) -> list[tuple[int, int]]:
    """``(parent, rank)`` per template node, parents first: the ``nodes`` rank paths with the highest prior
    (0.6 for the top successor, 0.2 / rank for the others, multiplied along the path), depth <= ``depth``."""
    prior = [0.6] + [0.2 / r for r in range(1, top_k)]
    out: list[tuple[int, int]] = []
    heap = [(-prior[r], -1, r, 1) for r in range(top_k)]
    while heap and len(out) < nodes:
        neg, parent, rank, d = heapq.heappop(heap)
        out.append((parent, rank))
        if d < depth:
            for r in range(top_k):
                heapq.heappush(heap, (neg * prior[r], len(out) - 1, r, d + 1))
    return out


class Adjacency:
    """The [vocab, k] table of the target's most likely next tokens after each token (overwritten, not merged)."""

    def __init__(self, top_k: int):
        self.top_k = top_k
        self.table: dict[int, list[int]] = {}

    def learn(self, seqs, verdicts) -> None:
        for seq, v in zip(seqs, verdicts):
            root = seq[len(seq) - len(v.tokens) - 1]
            successors = v.logits.topk(self.top_k, dim=-1).indices.tolist()
            for token, succ in zip([root] + v.tree.tokens, successors):
                self.table[token] = succ

    def successors(self, token: int) -> list[int]:
        return self.table.get(token, [])


class Recycling(Drafter):
    name = "recycling"

    def __init__(self, nodes: int = 24, top_k: int = 4, depth: int = 6):
        self.adjacency = Adjacency(top_k)
        self.template = rank_template(nodes, top_k, depth)

    def draft(self, seqs):
        return [fill_template(self.adjacency, seq[-1], self.template) for seq in seqs]

    def update(self, seqs, verdicts):
        self.adjacency.learn(seqs, verdicts)


def fill_template(
    adjacency: Adjacency, root: int, template, tree: DraftTree | None = None, parent: int = -1
) -> DraftTree:
    """Fill a rank template under ``parent`` of ``tree`` from the table; nodes whose parent has no such
    successor are left out with their subtrees."""
    tree = tree if tree is not None else DraftTree()
    placed: list[int | None] = []  # template node -> tree node
    for t_parent, rank in template:
        anchor = parent if t_parent < 0 else placed[t_parent]
        token = root if anchor == parent else (tree.tokens[anchor] if anchor is not None else None)
        succ = adjacency.successors(token) if anchor is not None else []
        placed.append(tree.add(succ[rank], anchor) if rank < len(succ) else None)
    return tree
