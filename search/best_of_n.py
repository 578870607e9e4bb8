"""Chain of thought and best-of-N: N independent trajectories, each grown one step at a time.

All trajectories of all problems advance together: every round asks the engine for one more step for every
unfinished trajectory in a single batched call, so N samples cost N rows of one batch, not N runs.
"""

from __future__ import annotations

from reasoner.core.types import Node, Tree
from reasoner.engine import StepEngine


class BestOfN:
    name = "best_of_n"

    def __init__(self, engine: StepEngine, n: int = 8):
        if n < 1:
            raise ValueError(f"best_of_n needs n >= 1, got {n}")
        self.engine, self.n = engine, n

    def run(self, trees: list[Tree]) -> list[list[Node]]:
        """Grow every tree to ``n`` finished leaves; returns them per tree."""
        self.engine.expand([t.root for t in trees], self.n)
        frontier = [leaf for t in trees for leaf in t.root.children if not leaf.terminal]
        while frontier:
            children = self.engine.expand(frontier, 1)
            frontier = [c[0] for c in children if not c[0].terminal]
        return [[leaf for leaf in _leaves(t.root)] for t in trees]


class ChainOfThought(BestOfN):
    """One trajectory (best-of-N with N = 1)."""

    name = "cot"

    def __init__(self, engine: StepEngine):
        super().__init__(engine, n=1)


def _leaves(node: Node):
    if not node.children:
        yield node
    for child in node.children:
        yield from _leaves(child)
