"""SuffixDecoding (Oliaro et al. 2024): suffix trees with frequency counts over the current request and over
earlier outputs (a global cache with FIFO eviction); the context's suffix is matched in both, and the
continuations are grown best-first by count-based probability into a tree whose size is adaptive to the match
length (``MAX_SPEC = factor * match length``). The best-scoring candidate (sum of node probabilities) wins.
Deterministic drafts.

The per-request tree is not materialised: the node of a context suffix is computed on demand from the
occurrences of the suffix in the row's own tokens (an index from token to positions, extended as tokens come),
which gives the same counts as a suffix tree without rebuilding one for every call's prompt."""

from __future__ import annotations

import heapq
from collections import deque

from ..tree import DraftTree
from .base import Drafter


class TrieNode:
    __slots__ = ("count", "children")

    def __init__(self):
        self.count = 0
        self.children: dict[int, TrieNode] = {}


class SuffixTrie:
    """Every suffix of the added sequences, up to ``depth`` tokens, with how many suffixes pass each node."""

    def __init__(self, depth: int):
        self.depth = depth
        self.root = TrieNode()

    def add(self, seq: list[int], sign: int = 1) -> None:
        for i in range(len(seq)):
            node = self.root
            for t in seq[i : i + self.depth]:
                child = node.children.get(t)
                if child is None:
                    child = node.children[t] = TrieNode()
                child.count += sign
                if child.count <= 0:
                    del node.children[t]
                    break
                node = child

    def remove(self, seq: list[int]) -> None:
        self.add(seq, -1)

    def matches(self, context: list[int]) -> list[tuple[int, TrieNode]]:
        """``(match length, node)`` for every suffix of ``context`` found, shortest first."""
        out = []
        for m in range(1, min(self.depth, len(context)) + 1):
            node = self.root
            for t in context[-m:]:
                node = node.children.get(t)
                if node is None:
                    return out
            out.append((m, node))
        return out


def continuations(seq: list[int], ends: list[int], depth: int) -> TrieNode:
    """A trie of what followed each occurrence ending at ``ends`` in ``seq`` (the suffix-tree node of that match)."""
    node = TrieNode()
    node.count = len(ends)
    for e in ends:
        cur = node
        for t in seq[e + 1 : e + 1 + depth]:
            cur = cur.children.setdefault(t, TrieNode())
            cur.count += 1
    return node


class Suffix(Drafter):
    name = "suffix"

    def __init__(
        self,
        num_tokens: int = 6,
        nodes: int = 24,
        min_prob: float = 0.1,
        cache_size: int = 1000,
        max_depth: int = 24,
        factor: float = 2.0,
    ):
        self.num_tokens, self.nodes, self.min_prob, self.factor, self.max_depth = (
            num_tokens,
            nodes,
            min_prob,
            factor,
            max_depth,
        )
        self.cache_size = cache_size
        self.global_trie = SuffixTrie(max_depth)
        self.cached: deque[list[int]] = deque()

    def begin(self, seqs, temperature, top_p):
        self.index = []
        for seq in seqs:
            positions: dict[int, list[int]] = {}
            for i, t in enumerate(seq):
                positions.setdefault(t, []).append(i)
            self.index.append(positions)

    def draft(self, seqs):
        return [self._best(seq, self.index[r]) for r, seq in enumerate(seqs)]

    def _best(self, seq: list[int], positions: dict) -> DraftTree:
        best, best_score = DraftTree(), 0.0
        for m, node in self._request_matches(seq, positions) + (
            self.global_trie.matches(seq) if self.cache_size else []
        ):
            tree, score = self._grow(node, min(self.nodes, int(self.factor * m)))
            if score > best_score:
                best, best_score = tree, score
        return best

    def _request_matches(self, seq, positions) -> list[tuple[int, TrieNode]]:
        ends = [i for i in positions.get(seq[-1], []) if i < len(seq) - 1]
        out, m = [], 1
        while ends and m <= self.max_depth:
            out.append((m, continuations(seq, ends, self.num_tokens)))
            ends = [e for e in ends if e - m >= 0 and seq[e - m] == seq[-1 - m]] if m < len(seq) - 1 else []
            m += 1
        return out

    def _grow(self, start: TrieNode, budget: int) -> tuple[DraftTree, float]:
        tree, score = DraftTree(), 0.0
        heap = [(-1.0, 0, -1, start)]  # (-probability, tie-break, tree node, trie node)
        order = 1
        while heap:
            neg, _, parent, node = heapq.heappop(heap)
            if parent >= 0:
                score -= neg
            total = sum(c.count for c in node.children.values())
            depth = len(tree.path(parent)) if parent >= 0 else 0
            if depth >= self.num_tokens:
                continue
            for token, child in sorted(node.children.items(), key=lambda tc: -tc[1].count):
                p = -neg * child.count / total
                if p < self.min_prob or len(tree) >= budget:
                    break
                heapq.heappush(heap, (-p, order, tree.add(token, parent), child))
                order += 1
        return tree, score

    def update(self, seqs, verdicts):
        for seq, v, positions in zip(seqs, verdicts, self.index):
            for i in range(len(seq) - len(v.tokens), len(seq)):
                positions.setdefault(seq[i], []).append(i)

    def select_rows(self, keep, finished):
        self.index = [self.index[r] for r in keep]
        if not self.cache_size:
            return
        for out in finished:
            self.global_trie.add(out)
            self.cached.append(list(out))
            if len(self.cached) > self.cache_size:
                self.global_trie.remove(self.cached.popleft())
