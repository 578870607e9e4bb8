"""Beam search with search-and-learn's semantics, and DVTS.

Beam search: ``n`` active beams; every round each writes one step; the verifier scores every new path
(aggregated with ``aggregate``); finished paths leave for the completed list; of the rest the best
``n / width`` are kept and duplicated back to ``n`` (each kept beam gets ``width`` children). Options as in
search-and-learn: ``filter_duplicates`` drops candidates whose whole text repeats another's before keeping;
``lookahead`` rolls each candidate ``lookahead`` more steps forward and ranks it by the score of where it
lands (search-and-learn rolls out greedily; the step engine samples at the recipe's temperature, so ours are
sampled rollouts). The rolled-out nodes are removed from the tree afterwards; their tokens stay counted.

DVTS (diverse verifier tree search): ``n / width`` independent subtrees; each round every subtree expands its
current node ``width`` times and moves greedily to the best-scored child; a subtree ends when that child is
finished, handing over all ``width`` children of its last expansion (``n`` trajectories in all).
"""

from __future__ import annotations

from reasoner.core.types import Node, Tree

from .common import expand_counts, path_scores, ranked
from .kv import KVMeter


def _check(n: int, width: int, name: str) -> None:
    if width < 1 or n < width or n % width:
        raise ValueError(
            f"{name} keeps n/width beams: search.n ({n}) must be a positive multiple of search.width ({width})"
        )


class BeamSearch:
    name = "beam"
    refill = True  # duplicate the kept beams back to n expansions (search-and-learn)

    def __init__(
        self,
        engine,
        verifier,
        n: int = 8,
        width: int = 4,
        aggregate: str = "last",
        filter_duplicates: bool = False,
        lookahead: int = 0,
        merger=None,
    ):
        _check(n, width, self.name)
        if lookahead < 0:
            raise ValueError(f"search.lookahead must be >= 0, got {lookahead}")
        self.engine, self.verifier = engine, verifier
        self.n, self.width, self.aggregate = n, width, aggregate
        self.filter_duplicates, self.lookahead, self.merger = filter_duplicates, lookahead, merger

    def run(self, trees: list[Tree]) -> list[list[Node]]:
        meter = KVMeter()
        completed: dict[Tree, list[Node]] = {t: [] for t in trees}
        active: dict[Tree, list[tuple[Node, int]]] = {t: [(t.root, self.n)] for t in trees}
        last: dict[Tree, list[Node]] = {t: [] for t in trees}
        while any(active.values()):
            pairs = [p for t in trees for p in active[t]]
            candidates = [c for kids in expand_counts(self.engine, pairs) for c in kids]
            scores = self._scores(candidates)
            for t in trees:
                mine = [(c, s) for c, s in zip(candidates, scores) if c.tree is t]
                if not mine:
                    continue
                completed[t] += [c for c, _ in mine if c.terminal]
                live = [(c, s) for c, s in mine if not c.terminal]
                last[t] = [c for c, _ in live]
                active[t] = self._select(t, live)
                meter.observe(t, [node for node, _ in active[t]])
        meter.book()
        out = []
        for t in trees:
            done = completed[t][: self.n]
            out.append(done or last[t])
        return out

    def _select(self, tree: Tree, live: list[tuple[Node, float]]) -> list[tuple[Node, int]]:
        """The kept beams with how many children each gets next round."""
        if self.filter_duplicates:
            seen, unique = set(), []
            for c, s in live:
                if c.text() not in seen:
                    seen.add(c.text())
                    unique.append((c, s))
            live = unique
        if self.merger is not None:
            live = self.merger.merge(live)
        keep = [c for c, _ in ranked([c for c, _ in live], [s for _, s in live])[: self.n // self.width]]
        if not keep:
            return []
        if not self.refill:
            return [(c, self.width) for c in keep]
        counts = {id(c): 0 for c in keep}
        for i in range(self.n):  # search-and-learn's (active * repeats)[:n]
            counts[id(keep[i % len(keep)])] += 1
        return [(c, counts[id(c)]) for c in keep]

    def _scores(self, candidates: list[Node]) -> list[float]:
        if not self.lookahead:
            return path_scores(self.verifier, candidates, self.aggregate)
        ends = {id(c): c for c in candidates}
        frontier = [c for c in candidates if not c.terminal]
        for _ in range(self.lookahead):
            if not frontier:
                break
            steps = self.engine.expand(frontier, 1)
            for kids in steps:
                child = kids[0]
                ends[id(_origin(child, candidates))] = child
            frontier = [kids[0] for kids in steps if not kids[0].terminal]
        scores = path_scores(self.verifier, [ends[id(c)] for c in candidates], self.aggregate)
        for c in candidates:  # the rollouts only ranked their origin
            c.children.clear()
        return scores


def _origin(node: Node, candidates: list[Node]) -> Node:
    ids = {id(c) for c in candidates}
    while id(node) not in ids:
        node = node.parent
    return node


class DVTS:
    name = "dvts"

    def __init__(self, engine, verifier, n: int = 8, width: int = 4, aggregate: str = "last"):
        _check(n, width, self.name)
        self.engine, self.verifier = engine, verifier
        self.n, self.width, self.aggregate = n, width, aggregate

    def run(self, trees: list[Tree]) -> list[list[Node]]:
        meter = KVMeter()
        out: dict[Tree, list[Node]] = {t: [] for t in trees}
        # every subtree's candidates: the root's n children split into n/width groups of width
        groups: list[tuple[Tree, list[Node]]] = []
        for t, kids in zip(trees, self.engine.expand([t.root for t in trees], self.n)):
            groups += [(t, kids[i : i + self.width]) for i in range(0, self.n, self.width)]
        while groups:
            scores = path_scores(self.verifier, [c for _, g in groups for c in g], self.aggregate)
            current, k = [], 0
            for t, g in groups:
                best = ranked(g, scores[k : k + len(g)])[0][0]
                k += len(g)
                if best.terminal:
                    out[t] += g
                else:
                    current.append((t, best))
            for t in trees:
                meter.observe(t, [node for owner, node in current if owner is t])
            children = self.engine.expand([node for _, node in current], self.width) if current else []
            groups = [(t, kids) for (t, _), kids in zip(current, children)]
        meter.book()
        return [out[t] for t in trees]
