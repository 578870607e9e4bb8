"""Chain of thought and best-of-N: N independent trajectories, then the vote.

All trajectories of all problems advance together. Neither search looks at a step before its trajectory ends, so
by default each trajectory is written by one request and split into steps afterwards (``StepEngine.write_whole``):
no round trip per step. Step by step instead (``whole: false``, an engine that judges steps as they come such as
step speculation's, the repetition guard, or a caller listening for each step, ``Tree.on_step``): every round asks
the engine for one more step for every unfinished trajectory in a single batched call, so N samples cost N rows of
one batch, not N runs.
"""

from __future__ import annotations

from reasoner.core.types import Node, Tree
from reasoner.engine import StepEngine


class BestOfN:
    name = "best_of_n"

    def __init__(self, engine: StepEngine, n: int = 8, whole: bool = True):
        if n < 1:
            raise ValueError(f"best_of_n needs n >= 1, got {n}")
        self.engine, self.n, self.whole = engine, n, whole

    def run(self, trees: list[Tree]) -> list[list[Node]]:
        """Grow every tree to ``n`` finished leaves; returns them per tree."""
        if self.whole and getattr(self.engine, "writes_whole", False) and not any(t.on_step for t in trees):
            self.engine.write_whole([t.root for t in trees], self.n)
            return [list(_leaves(t.root)) for t in trees]
        self.engine.expand([t.root for t in trees], self.n)
        frontier = [leaf for t in trees for leaf in t.root.children if not leaf.terminal]
        while frontier:
            children = self.engine.expand(frontier, 1)
            frontier = [c[0] for c in children if not c[0].terminal]
        return [[leaf for leaf in _leaves(t.root)] for t in trees]


class ChainOfThought(BestOfN):
    """One trajectory (best-of-N with N = 1)."""

    name = "cot"

    def __init__(self, engine: StepEngine, whole: bool = True):
        super().__init__(engine, n=1, whole=whole)


def _leaves(node: Node):
    if not node.children:
        yield node
    for child in node.children:
        yield from _leaves(child)
