"""STAND's logit-based n-gram pool (Song et al. 2025, "Accelerated Test-Time Scaling with Model-Free Speculative
Sampling"): for every n-gram context the target has decoded, the top-k next tokens *with the target's
probabilities*, merged over observations by a running average.

STAND's pool is per problem: the trajectories of one problem (best-of-N samples, the branches of a search tree)
repeat each other's reasoning, so each drafts from its siblings' text, while other problems' text would only add
noise. Here rows with the same prompt share a pool, and a later call joins the pool of the problem whose prompt
its own prompt extends (a search step's prompt is the problem's prompt plus the steps so far); different
problems of one batch never share (``tests/test_specdec_mechanisms.py``). ``shared=False`` keeps one pool per
row instead (the per-trajectory baseline). Pools of the ``max_problems`` problems used last are kept.

Drafting looks up the longest stored context (``ngram`` tokens down to 1) at each node and grows a tree best-first
by cumulative pool probability under the node budget; children are drawn without replacement with Gumbel-top-k
when sampling (most likely first when greedy), and each tree carries the pool distributions it drew from, so
verification uses multi-step speculative sampling.

The tree's shape: as in STAND, fitted offline on data (``shape``): how often the child of each rank at each depth
is accepted, measured by ``python -m evals.fit_stand`` on a wide tree, gives every slot (a path of ranks) its
probability of being accepted, and the ``nodes`` slots with the highest probability make the shape (``fit_shape``;
``toy`` is the one fitted on toy:target). Drafting fills the slots from the pool: a slot of rank r holds its
parent's r-th child in draw order, so how many children a node gets is fixed by the shape, never by the draw. The
fit's model treats depths and ranks as independent (acceptance of a rank at a depth, whatever the path); without a
shape the tree is grown at run time, best-first by cumulative pool probability.
"""

from __future__ import annotations

import heapq
import json
import math
import random
from pathlib import Path

import torch

from ..tree import DraftTree
from ..verify import sampling_probs
from .base import Drafter


class NgramPool(Drafter):
    name = "ngram_pool"

    def __init__(
        self,
        num_tokens: int = 6,
        nodes: int = 24,
        top_k: int = 4,
        ngram: int = 3,
        shared: bool = True,
        seed: int = 0,
        keep: int = 8,
        cover: float = 0.8,
        max_contexts: int = 200_000,
        max_problems: int = 256,
        shape: list[tuple[int, int]] | None = None,
    ):
        self.num_tokens, self.nodes, self.top_k, self.ngram, self.shared = num_tokens, nodes, top_k, ngram, shared
        self.keep, self.cover, self.max_contexts, self.max_problems = keep, cover, max_contexts, max_problems
        # (parent slot, rank) per slot, parents first, best first (so any prefix is a tree): the fitted tree, cut to
        # the node budget; None: grown at run time
        self.shape = None if shape is None else shape[:nodes]
        self.random = random.Random(seed)
        self.problems: dict[tuple, dict] = {}  # a problem's prompt -> its pool, least recently used first
        self.pools: list[dict] = []  # each row's pool: context -> [observations, {token: probability}]

    def begin(self, seqs, temperature, top_p):
        self.temperature, self.top_p = temperature, top_p
        self.pools = [self.problem_pool(tuple(s)) for s in seqs] if self.shared else [{} for _ in seqs]

    def problem_pool(self, prompt: tuple) -> dict:
        """The pool of the problem ``prompt`` belongs to: the one whose prompt is the longest prefix of it (the same
        prompt, or an earlier call's that this one extends), else a new one."""
        key = max((k for k in self.problems if prompt[: len(k)] == k), key=len, default=None)
        if key is None:
            key = prompt
            if len(self.problems) >= self.max_problems:
                del self.problems[next(iter(self.problems))]
            self.problems[key] = {}
        pool = self.problems.pop(key)
        self.problems[key] = pool  # most recently used last
        return pool

    # -- the pool ------------------------------------------------------------------------------------------

    def observe(self, pool: dict, context: list[int], tokens: list[int], probs: list[float]) -> None:
        """Merge one observation of the target's next-token distribution after ``context`` into every n-gram key."""
        for n in range(1, min(self.ngram, len(context)) + 1):
            key = tuple(context[-n:])
            entry = pool.get(key)
            if entry is None:
                if len(pool) >= self.max_contexts:
                    del pool[next(iter(pool))]  # oldest context first
                pool[key] = [1, dict(zip(tokens, probs))]
                continue
            seen, dist = entry
            old, new = seen / (seen + 1), 1 / (seen + 1)
            merged = {t: p * old for t, p in dist.items()}
            for t, p in zip(tokens, probs):
                merged[t] = merged.get(t, 0.0) + p * new
            if len(merged) > self.keep:
                merged = dict(sorted(merged.items(), key=lambda tp: -tp[1])[: self.keep])
            entry[0], entry[1] = seen + 1, merged

    def lookup(self, pool: dict, context) -> dict | None:
        for n in range(min(self.ngram, len(context)), 0, -1):
            entry = pool.get(tuple(context[-n:]))
            if entry is not None:
                return entry[1]
        return None

    # -- drafting ------------------------------------------------------------------------------------------

    def draft(self, seqs):
        grow = self._grow if self.shape is None else self._fill
        return [grow(self.pools[r], seq) for r, seq in enumerate(seqs)]

    def _fill(self, pool: dict, seq: list[int]) -> DraftTree:
        """The fitted shape, filled from the pool: slot (parent, r) is its parent's r-th child in draw order (slots
        whose parent is empty, or whose pool distribution has fewer tokens, stay empty)."""
        tree = DraftTree(dists={})
        if not pool:
            return tree
        tail = seq[-self.ngram :]
        width = [0] * (len(self.shape) + 1)  # children per slot in the shape (index 0: the root)
        for parent, _ in self.shape:
            width[parent + 1] += 1
        placed: list[int | None] = []  # slot -> tree node
        drawn: dict[int, list[int]] = {}  # tree node -> its children's tokens in draw order
        for parent, rank in self.shape:
            anchor = -1 if parent < 0 else placed[parent]
            if anchor is None:
                placed.append(None)
                continue
            if anchor not in drawn:
                dist = self.lookup(pool, tail + tree.path(anchor) if anchor >= 0 else tail)
                total = sum(dist.values()) if dist else 0.0
                q = {t: p / total for t, p in dist.items()} if total > 0 else {}
                drawn[anchor] = self._draw(q, width[parent + 1]) if q else []
                if drawn[anchor]:
                    tree.dists[anchor] = q
            kids = drawn[anchor]
            placed.append(tree.add(kids[rank], anchor) if rank < len(kids) else None)
        return tree

    def _grow(self, pool: dict, seq: list[int]) -> DraftTree:
        tree = DraftTree(dists={})
        if not pool:
            return tree
        tail = seq[-self.ngram :]
        heap = [(-1.0, -1, 0)]  # (-cumulative probability, node, depth)
        while heap and len(tree) < self.nodes:
            neg, node, depth = heapq.heappop(heap)
            if depth >= self.num_tokens:
                continue
            dist = self.lookup(pool, tail + tree.path(node) if node >= 0 else tail)
            if not dist:
                continue
            total = sum(dist.values())
            q = {t: p / total for t, p in dist.items()}
            kids = self._children(q, self.nodes - len(tree))
            for token in kids:
                heapq.heappush(heap, (neg * q[token], tree.add(token, node), depth + 1))
            tree.dists[node] = q
        return tree

    def _children(self, q: dict[int, float], budget: int) -> list[int]:
        """How many children is decided from q alone (enough to cover ``cover`` of it), then they are drawn:
        the most likely when greedy, Gumbel-top-k (a sample without replacement) when sampling."""
        ranked = sorted(q.items(), key=lambda tp: -tp[1])[: self.top_k]
        w, mass = 0, 0.0
        while w < len(ranked) and (w == 0 or mass < self.cover):
            mass += ranked[w][1]
            w += 1
        return self._draw(q, min(w, budget))

    def _draw(self, q: dict[int, float], w: int) -> list[int]:
        """``w`` children from q: the most likely when greedy, Gumbel-top-w (a sample without replacement, in
        order) when sampling."""
        if self.temperature == 0:
            return [t for t, _ in sorted(q.items(), key=lambda tp: -tp[1])[:w]]
        keys = {t: math.log(p) - math.log(-math.log(self.random.random() or 1e-300)) for t, p in q.items() if p > 0}
        return sorted(keys, key=keys.get, reverse=True)[:w]

    # -- learning from the target --------------------------------------------------------------------------

    def update(self, seqs, verdicts):
        for r, (seq, v) in enumerate(zip(seqs, verdicts)):
            rows = [0] + [i + 1 for i in v.path]
            logits = v.logits[rows].cpu()
            p = (
                torch.softmax(logits, -1)
                if self.temperature == 0
                else sampling_probs(logits, self.temperature, self.top_p)
            )
            top = p.topk(min(self.keep, p.shape[-1]))
            start = len(seq) - len(v.tokens)  # seq[:start] ends with the root
            for j, (tokens, probs) in enumerate(zip(top.indices.tolist(), top.values.tolist())):
                self.observe(self.pools[r], seq[max(0, start + j - self.ngram) : start + j], tokens, probs)

    def select_rows(self, keep, finished):
        self.pools = [self.pools[r] for r in keep]


def fit_shape(accepted: list[list[float]], tried: list[list[float]], nodes: int) -> list[tuple[int, int]]:
    """STAND's tree shape from measured acceptance: ``accepted[d][r] / tried[d][r]`` is how often the rank-r child
    at depth d + 1 was accepted when tried (its parent accepted, the ranks before it rejected). A slot's probability
    of being on the accepted path is the product over its path of (that rank's rate times the chance every lower
    rank was rejected); the ``nodes`` slots with the highest probability, best first from a heap (a rank enters
    after the rank before it, a depth after its parent), are the shape: (parent slot, rank), parents first."""
    rate = [[a / t if t else 0.0 for a, t in zip(acc, tri)] for acc, tri in zip(accepted, tried)]

    def reach(d: int, r: int) -> float:
        return rate[d][r] * math.prod(1 - rate[d][j] for j in range(r))

    shape: list[tuple[int, int]] = []
    heap = [(-reach(0, 0), 0, -1, 0, 0, 1.0)]  # (-probability, order, parent slot, rank, depth index, parent's)
    order = 0
    while heap and len(shape) < nodes:
        neg, _, parent, rank, d, above = heapq.heappop(heap)
        if neg >= 0:
            break
        shape.append((parent, rank))
        if rank + 1 < len(rate[d]):  # the next sibling, tried if this one is rejected
            order += 1
            heapq.heappush(heap, (-above * reach(d, rank + 1), order, parent, rank + 1, d, above))
        if d + 1 < len(rate):  # the first child
            order += 1
            heapq.heappush(heap, (neg * reach(d + 1, 0), order, len(shape) - 1, 0, d + 1, -neg))
    return shape


def load_shape(path: str) -> list[tuple[int, int]]:
    """A shape file written by ``python -m evals.fit_stand`` (``toy``: the one fitted on toy:target)."""
    if path == "toy":
        path = str(Path(__file__).parents[2] / "toy" / "models" / "stand_shape.json")
    return [(int(p), int(r)) for p, r in json.loads(Path(path).read_text())["shape"]]
