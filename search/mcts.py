"""Monte Carlo tree search over reasoning steps (OpenR's PUCT, llm-reasoners' rollouts).

Each of the ``n`` iterations, for every problem at once:

1. *select*: from the root, follow the child with the highest PUCT score
   ``Q(c) + (ln((N + base + 1) / base) + init) * P(c) * sqrt(N) / (1 + N(c))`` (OpenR's constants by
   default: base 19652, init 1.25) while the node has been expanded;
2. *expand*: the step engine writes ``width`` children; each child's value starts at its verifier score
   (OpenR's ``init_critic_value``) and its prior ``P`` is its step's probability under the policy (the
   geometric-mean token probability, normalised over the siblings); optional Dirichlet noise on the root's
   priors (AlphaZero's alpha 0.3, weight 0.25);
3. *roll out* from the best child to a finished trajectory: ``sample`` writes one sampled step at a time,
   ``greedy`` expands ``width`` children per step and follows the best-scored one (llm-reasoners' ``max``);
   rollout nodes stay in the tree;
4. *back up*: the finished trajectory's aggregated verifier score is added to every node on its path
   (``visits`` += 1, ``value`` = mean of what came back). An iteration that selects a finished node backs up
   its score again.

So ``root.visits == n`` and every expanded node's visits equal the sum of its children's. The answer:
``select=vote`` hands every finished trajectory to the recipe's vote; ``value`` / ``visits`` follow the child
with the highest mean value / most visits from the root to a finished node and hand over that one.
"""

from __future__ import annotations

import copy
import math

import numpy as np

from reasoner.core.types import Node, Tree

from .common import expand_counts, leaves, path_scores
from .kv import KVMeter


class MCTS:
    name = "mcts"

    def __init__(
        self,
        engine,
        verifier,
        n: int = 8,
        width: int = 4,
        aggregate: str = "last",
        rollout: str = "sample",
        select: str = "vote",
        puct_base: float = 19652.0,
        puct_init: float = 1.25,
        root_noise: bool = False,
        seed: int = 0,
        merger=None,
    ):
        if rollout not in ("sample", "greedy"):
            raise ValueError(f"unknown search.rollout {rollout!r}: use sample or greedy")
        if select not in ("vote", "value", "visits"):
            raise ValueError(f"unknown search.select {select!r}: use vote, value or visits")
        if n < 1 or width < 1:
            raise ValueError(f"mcts needs search.n (iterations) >= 1 and search.width >= 1, got {n} and {width}")
        self.engine, self.verifier = engine, verifier
        self.n, self.width, self.aggregate, self.rollout, self.select = n, width, aggregate, rollout, select
        self.base, self.init, self.root_noise = puct_base, puct_init, root_noise
        self.rng = np.random.default_rng(seed)
        self.merger = merger

    # -- tree statistics (kept outside Node: priors and initial values are this search's business)

    def _q(self, node: Node) -> float:
        return node.value if node.value is not None else 0.0

    def _puct(self, parent: Node, child: Node) -> float:
        c = math.log((parent.visits + self.base + 1) / self.base) + self.init
        return self._q(child) + c * self.prior[child] * math.sqrt(parent.visits) / (1 + child.visits)

    def _best_child(self, node: Node) -> Node:
        return max(node.children, key=lambda ch: self._puct(node, ch))

    def _expand(self, pairs: list[tuple[Node, int]]) -> list[list[Node]]:
        """Expand, score and give priors to the new children; ``pairs`` are (node, children wanted)."""
        groups = expand_counts(self.engine, pairs)
        new = [c for g in groups for c in g]
        for child, v in zip(new, path_scores(self.verifier, new, self.aggregate)):
            child.value, self.reward[child] = v, v
        for node, _ in pairs:
            if self.merger is not None:
                fresh = [c for c in node.children if not c.terminal and c.visits == 0]  # visited children stay
                kept = [c for c, _ in self.merger.merge([(c, self.reward[c]) for c in fresh])]
                node.children[:] = [c for c in node.children if c not in fresh] + kept
            self.expanded.add(node)
            self._priors(node)
        return groups

    def _priors(self, node: Node) -> None:
        weights = np.array([math.exp(sum(c.step.logprobs) / max(1, len(c.step.logprobs))) for c in node.children])
        p = weights / weights.sum() if weights.sum() > 0 else np.full(len(weights), 1 / len(weights))
        if self.root_noise and node.parent is None:
            p = 0.75 * p + 0.25 * self.rng.dirichlet([0.3] * len(p))
        for c, v in zip(node.children, p):
            self.prior[c] = float(v)

    def _begin(self) -> None:
        """Fresh search state: priors, verifier rewards and the expanded nodes."""
        self.prior: dict[Node, float] = {}
        self.reward: dict[Node, float] = {}
        self.expanded: set[Node] = set()

    def _select(self, tree: Tree) -> Node:
        """From the root, the best child by ``_puct`` while the node has been expanded."""
        node = tree.root
        while node in self.expanded and not node.terminal and node.children:
            node = self._best_child(node)
        return node

    def _roll_out(self, starts: list[Node]) -> list[Node]:
        """Every unfinished start rolled out to a finished trajectory (its rollout nodes stay in the tree)."""
        ends = list(starts)
        frontier = [i for i, node in enumerate(ends) if not node.terminal]
        while frontier:
            if self.rollout == "sample":
                for i, kids in zip(frontier, self.engine.expand([ends[i] for i in frontier], 1)):
                    ends[i] = kids[0]
            else:
                self._expand([(ends[i], self.width) for i in frontier])
                for i in frontier:
                    ends[i] = max(ends[i].children, key=lambda c: self.reward[c])
            frontier = [i for i in frontier if not ends[i].terminal]
        return ends

    def run(self, trees: list[Tree]) -> list[list[Node]]:
        """The search, on a copy of this object that holds the run's state (priors, rewards, expanded nodes), so
        that problems searched at once, each in its thread, share none of it."""
        return copy.copy(self)._run(trees)

    def _run(self, trees: list[Tree]) -> list[list[Node]]:
        self._begin()
        meter = KVMeter()
        for _ in range(self.n):
            # 1. select
            picked = [self._select(t) for t in trees]
            # 2. expand the unexpanded (a rollout child already there counts towards width)
            todo = [(node, max(1, self.width - len(node.children))) for node in picked if not node.terminal]
            self._expand(todo)
            starts = [node if node.terminal else self._best_child(node) for node in picked]
            # 3. roll out every unfinished start to a finished trajectory
            ends = self._roll_out(starts)
            # 4. back up the finished trajectories' scores
            for end, v in zip(ends, path_scores(self.verifier, ends, self.aggregate)):
                self._back_up(end, v)
            for t in trees:  # MCTS keeps its whole tree: any node may be selected again
                meter.observe(t, leaves(t.root))
        meter.book()
        return [self._answer(t) for t in trees]

    def _back_up(self, end: Node, v: float) -> None:
        """A finished trajectory's score ``v``: one more visit for every node on its path, whose value is the
        mean of what came back."""
        self.reward[end] = v
        node = end
        while node is not None:
            node.visits += 1
            node.value = v if node.visits == 1 else node.value + (v - node.value) / node.visits
            node = node.parent

    def _answer(self, tree: Tree) -> list[Node]:
        finished = [leaf for leaf in leaves(tree.root) if leaf.terminal and leaf.visits > 0]
        if self.select == "vote" or not finished:
            return finished
        key = (lambda c: self._q(c)) if self.select == "value" else (lambda c: c.visits)
        node = tree.root
        while not node.terminal:
            visited = [c for c in node.children if c.visits > 0]
            if not visited:
                break
            node = max(visited, key=key)
        return [node]
