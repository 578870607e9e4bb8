"""A* over partial solutions: best-first, always expanding the open node with the lowest ``f = g + h``.

``g`` is the cost already paid on the path, as the policy sees it: ``beta`` times the mean negative
log-likelihood of the path's tokens (A*-Thought's ``g`` is the same quantity, -beta * mean log p); ``h``
estimates the cost still to come from the verifier: ``-log v`` for the path's aggregated score ``v`` (the
surprise of this path turning out right). A mean rather than a sum keeps ``g`` from growing with depth, which
would turn the search into breadth-first enumeration. Each round pops the best open node of every problem;
a popped finished trajectory is a candidate; the search stops at ``n`` candidates (or ``max_expansions``;
then, if nothing finished, the best open node is rolled out to the end so there is an answer).

A node's successors are the policy's samples, so two things differ from textbook A*. Graph search: a child whose
path repeats one already found is dropped (a confident policy writes the same step several times). Partial
expansion (PEA*, Yoshizumi et al. 2000; there a node is reopened at the cost of its best child not yet generated,
which is unknown here: see ``_reopen``): an expanded node goes back on the open list, to be sampled again when
nothing else is cheaper, so the search can draw more steps where the ones drawn all scored badly. A tree that
already holds trajectories (``auto``'s probes) is continued from them rather than from its bare root.
"""

from __future__ import annotations

import heapq
import itertools
import math

from reasoner.core.types import Node, Tree

from .common import path_scores
from .kv import KVMeter


class AStar:
    name = "astar"

    def __init__(
        self,
        engine,
        verifier,
        n: int = 1,
        width: int = 4,
        aggregate: str = "min",
        beta: float = 0.1,
        max_expansions: int = 64,
    ):
        if n < 1 or width < 1 or max_expansions < 1:
            raise ValueError(
                f"astar needs search.n, search.width and search.max_expansions >= 1, got {n}, {width}, {max_expansions}"
            )
        self.engine, self.verifier = engine, verifier
        self.n, self.width, self.aggregate, self.beta, self.max_expansions = n, width, aggregate, beta, max_expansions

    def cost(self, node: Node, score: float) -> float:
        lps = [lp for p in node.path() for lp in p.step.logprobs]
        g = -self.beta * sum(lps) / max(1, len(lps))
        return g - math.log(max(score, 1e-9))

    def run(self, trees: list[Tree]) -> list[list[Node]]:
        meter = KVMeter()
        tie = itertools.count()
        open_: dict[Tree, list] = {t: [] for t in trees}
        found: dict[Tree, list[Node]] = {t: [] for t in trees}
        expansions = {t: 0 for t in trees}
        seen: dict[Tree, dict[str, Node]] = {t: {} for t in trees}  # the closed set: a path's text -> its first node
        drawn: dict[Node, list[float]] = {}  # an expanded node: the policy's probability of each distinct child
        cost: dict[Node, float] = {t.root: 0.0 for t in trees}
        self._held(trees, open_, seen, drawn, cost, tie)
        while True:
            to_expand = []
            for t in trees:
                while open_[t] and len(found[t]) < self.n:
                    node = heapq.heappop(open_[t])[-1]
                    if not node.terminal:
                        if expansions[t] < self.max_expansions:
                            to_expand.append(node)
                        break
                    found[t].append(node)
                meter.observe(t, [entry[-1] for entry in open_[t]] + [n for n in to_expand if n.tree is t])
            if not to_expand:
                break
            fresh = []
            for node, children in zip(to_expand, self.engine.expand(to_expand, self.width)):
                expansions[node.tree] += 1
                mine = drawn.setdefault(node, [])
                for c in children:
                    if _new_state(seen[c.tree], c):
                        mine.append(_probability(c))
                        fresh.append(c)
                self._reopen(open_[node.tree], node, cost[node], sum(mine), len(mine), tie)
            for c, v in zip(fresh, path_scores(self.verifier, fresh, self.aggregate)):
                cost[c] = self.cost(c, v)
                # ties go to the deeper node, then to the older one
                heapq.heappush(open_[c.tree], (cost[c], -c.depth, next(tie), c))
        meter.book()
        return [found[t] or self._finish(open_[t]) for t in trees]

    def _held(self, trees: list[Tree], open_, seen, drawn, cost, tie) -> None:
        """The search continues from the nodes a tree holds already (``auto``'s probe trajectories), as if it had
        found them: a held state is scored and goes on the open list, a node with children as an expanded one
        (reopened), and a state held twice counts once. A tree that holds nothing starts from its root."""
        held, ends = [], []  # held states with children, and without
        for t in trees:
            if not t.root.children:
                heapq.heappush(open_[t], (0.0, 0, next(tie), t.root))
                continue
            seen[t][""] = t.root
            stack = [t.root]
            while stack:
                node = stack.pop()
                first = seen[t][node.text()]  # the node holding this state first (a repeat's children are its)
                for c in node.children:
                    stack.append(c)
                    if _new_state(seen[t], c):
                        drawn.setdefault(first, []).append(_probability(c))
                        (held if c.children else ends).append(c)
        # the ends first: a verifier that caches step scores then scores the held prefixes from the same forwards
        scores = path_scores(self.verifier, ends, self.aggregate) + path_scores(self.verifier, held, self.aggregate)
        for c, v in zip(ends + held, scores):
            cost[c] = self.cost(c, v)
        for c in ends:
            heapq.heappush(open_[c.tree], (cost[c], -c.depth, next(tie), c))
        for node, probabilities in drawn.items():
            self._reopen(open_[node.tree], node, cost[node], sum(probabilities), len(probabilities), tie)

    @staticmethod
    def _reopen(heap: list, node: Node, f: float, covered: float, distinct: int, tie) -> None:
        """Partial expansion (PEA*, Yoshizumi et al. 2000): a node's successors are the policy's samples, never
        all seen, so an expanded node goes back on the open list to be sampled again, at its own cost ``f`` plus
        the surprise of a new sample being a state not found yet that beats the ``distinct`` found:
        -log(1 - ``covered``, the policy's probability of those) + log(1 + ``distinct``) (of exchangeable draws, the
        next beats the others with probability 1 / (1 + their count)). The second term keeps the cost rising where
        the first cannot: a real model's long steps each have a tiny probability, so ``covered`` stays near 0, and
        a node at its own cost alone would be drawn from again and again ahead of its children."""
        if covered < 1 - 1e-6:
            node.tree.stats.count("reopened_states")
            heapq.heappush(heap, (f - math.log(1 - covered) + math.log(1 + distinct), -node.depth, next(tie), node))

    def _finish(self, heap: list) -> list[Node]:
        """Out of expansions before any trajectory finished: roll the best open node out to the end (one
        sampled step at a time), since a partial solution has no answer."""
        if not heap:
            return []
        node = min(heap)[-1]
        while not node.terminal:
            node = self.engine.expand([node], 1)[0][0]
        return [node]


def _new_state(seen: dict[str, Node], node: Node) -> bool:
    """Graph search: whether ``node``'s path is a state not found before (then ``seen`` records it); a repeat is
    counted (``duplicate_states``), since a state is expanded once."""
    text = node.text()
    if text in seen:
        node.tree.stats.count("duplicate_states")
        return False
    seen[text] = node
    return True


def _probability(node: Node) -> float:
    """The policy's probability of ``node``'s step (without its log-probs, 1: as if it covered everything, so its
    parent is not sampled again)."""
    return math.exp(sum(node.step.logprobs)) if node.step.logprobs else 1.0
