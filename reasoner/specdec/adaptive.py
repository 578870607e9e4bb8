"""Adaptive tree size by goodput (SmartSpec, Liu et al. 2024): per step, pick the draft budget that maximises
expected emitted tokens per second for the whole batch, measured on this hardware as the run goes, including
a budget of 0 (speculation off) when a large batch makes verifying trees slower than plain decoding.

For each budget level the controller keeps the mean tokens emitted per row and forward, and a linear model of step
time (drafting + verification) in the number of rows, both learned online; it tries every level a few times first
and re-tries the others now and then. Trees are cut to their first ``level`` nodes, a prefix in node order, so
every kept node keeps its parent and each node's kept children are a prefix of its sibling order: the
verification rules stay exact. Deviation from SmartSpec: its step-time model is fitted offline per batch token
count; here it is fitted online per level, which needs no calibration run."""

from __future__ import annotations

from collections import defaultdict

from .tree import DraftTree


class Goodput:
    def __init__(self, nodes: int, explore_every: int = 16, warmup: int = 3):
        self.levels = sorted({0, max(1, nodes // 4), nodes})
        self.explore_every, self.warmup = explore_every, warmup
        self.emitted = defaultdict(lambda: [0.0, 0])  # level -> [tokens per row, observations]; decayed sums
        self.fit = defaultdict(lambda: [0.0] * 5)  # level -> decayed sums of 1, x, y, xx, xy (x = rows, y = seconds)
        self.steps = 0

    def choose(self, rows: int) -> int:
        self.steps += 1
        untried = [lv for lv in self.levels if self.emitted[lv][1] < self.warmup]
        if untried:
            return untried[0]
        if self.steps % self.explore_every == 0:  # re-try the level seen least recently often
            return min(self.levels, key=lambda lv: self.emitted[lv][1])
        return max(self.levels, key=lambda lv: rows * self.mean_emitted(lv) / self.seconds(lv, rows))

    def mean_emitted(self, level: int) -> float:
        total, n = self.emitted[level]
        return total / n

    def seconds(self, level: int, rows: int) -> float:
        n, sx, sy, sxx, sxy = self.fit[level]
        var = n * sxx - sx * sx
        if var <= 1e-9:
            return max(sy / n, 1e-6)
        slope = (n * sxy - sx * sy) / var
        return max((sy - slope * sx) / n + slope * rows, 1e-6)

    def record(self, level: int, rows: int, emitted: int, seconds: float, decay: float = 0.98) -> None:
        e = self.emitted[level]
        e[0], e[1] = e[0] * decay + emitted / rows, e[1] * decay + 1
        f = self.fit[level]
        for i, v in enumerate((1.0, rows, seconds, rows * rows, rows * seconds)):
            f[i] = f[i] * decay + v


def prefix(tree: DraftTree, size: int) -> DraftTree:
    """The tree's first ``size`` nodes (node indices unchanged)."""
    if len(tree) <= size:
        return tree
    dists = None if tree.dists is None else {p: q for p, q in tree.dists.items() if p < size}
    return DraftTree(tree.tokens[:size], tree.parents[:size], dists)
