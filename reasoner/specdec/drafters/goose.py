"""Goose (Jin et al. 2026, "Anisotropic Speculation Trees for Training-Free Speculative Decoding"): context
matches (prompt lookup) are accepted far more often than statistical guesses (the Token Recycling table), so the
best tree under a node budget is anisotropic: a deep spine of the context match plus wide, shallow branches from
the table, widest near the root (a harmonic 1/i share per spine position). Without a match the whole budget goes
to the table's template. Deterministic drafts.

Simplified from the paper's Algorithm 1: the spine length follows an exponential moving average of how much of
the spine was accepted (instead of its three confidence tiers), and each branch is one table alternative followed
by the table's top successors."""

from __future__ import annotations

from ..tree import DraftTree
from .base import Drafter, longest_match
from .recycling import Adjacency, fill_template, rank_template


class Goose(Drafter):
    name = "goose"

    def __init__(self, nodes: int = 24, top_k: int = 4, spine: int = 12, ngram: int = 3, branch_depth: int = 3):
        self.nodes, self.top_k, self.max_spine, self.ngram, self.branch_depth = nodes, top_k, spine, ngram, branch_depth
        self.adjacency = Adjacency(top_k)
        self.template = rank_template(nodes, top_k, 6)
        self.spine_ema = float(spine)  # accepted spine tokens, smoothed

    def draft(self, seqs):
        self.spines, self.drafted = [], True
        trees = []
        length = max(2, min(self.max_spine, round(self.spine_ema) + 2))
        for seq in seqs:
            spine = longest_match(seq, self.ngram, 1, min(length, self.nodes))[1]
            self.spines.append(len(spine))
            trees.append(self._tree(seq[-1], spine) if spine else fill_template(self.adjacency, seq[-1], self.template))
        return trees

    def _tree(self, root: int, spine: list[int]) -> DraftTree:
        tree = DraftTree()
        tree.add_chain(spine)  # nodes 0..len-1
        left = self.nodes - len(spine)
        weights = [1 / (i + 1) for i in range(len(spine))]
        total = sum(weights)
        for i, w in enumerate(weights):  # branches at the root (i = 0) and under each spine node
            allowance = round(left * w / total)
            anchor, token = (-1, root) if i == 0 else (i - 1, spine[i - 1])
            for alt in [t for t in self.adjacency.successors(token) if t != spine[i]]:
                if allowance <= 0 or len(tree) >= self.nodes:
                    break
                node = tree.add(alt, anchor)
                allowance -= 1
                for _ in range(self.branch_depth - 1):
                    nxt = self.adjacency.successors(tree.tokens[node])
                    if not nxt or allowance <= 0 or len(tree) >= self.nodes:
                        break
                    node = tree.add(nxt[0], node)
                    allowance -= 1
        return tree

    def update(self, seqs, verdicts):
        self.adjacency.learn(seqs, verdicts)
        if not self.drafted:
            return
        self.drafted = False
        accepted = [sum(1 for n in v.path if n < s) for v, s in zip(verdicts, self.spines) if s]
        if accepted:
            self.spine_ema = 0.8 * self.spine_ema + 0.2 * (sum(accepted) / len(accepted))
