"""Compute-optimal search (Snell et al. 2024, "Scaling LLM Test-Time Compute Optimally"): the best strategy and N
depend on a problem's difficulty, so estimate the difficulty first and spend accordingly.

Snell et al. bin problems by difficulty and pick, per bin, the strategy that is best at the budget. Deviation: they
estimate difficulty from a verifier's scores over samples; here it is the agreement of ``probe`` sampled
trajectories (the fraction that give the majority answer, as the vote groups answers), which needs no verifier and
is what self-consistency already computes. The table (per bin: the highest agreement it takes, and a search
section) is written by hand or fitted by ``reasoner bench search --fit-auto`` on a calibration split.

Sampling strategies reuse the probes: CoT keeps the first probe trajectory, best-of-N keeps ``min(n, probe)`` of
them and samples only the rest. A* continues from them (they are states it has found: scored, on its open list).
Any other search starts from a bare root (the probes' tokens are still counted).
Each tree's stats count ``auto_agreement`` (the measured agreement), ``auto_bin_<i>`` and ``auto_<method>``, so a
run's summary shows how many problems went where.
"""

from __future__ import annotations

from reasoner.core.types import Candidate, Node, Tree
from reasoner.engine import StepEngine
from verifiers.math import extract_answer

from .best_of_n import BestOfN
from .common import leaves
from .vote import group_answers

REUSES_PROBES = ("cot", "best_of_n")  # independent samples from the root, as the probes are
CONTINUES_PROBES = ("astar",)  # searches that continue from the trajectories a tree holds


def agreement(answers: list[str | None]) -> float:
    """The fraction of ``answers`` that give the most common answer (grouped as the vote groups them); a trajectory
    without an answer agrees with nothing."""
    if not answers:
        return 0.0
    groups = group_answers([Candidate([], a) for a in answers])
    return max((len(g) for g in groups), default=0) / len(answers)


class AutoSearch:
    name = "auto"

    def __init__(self, engine: StepEngine, probe: int, bins: list[tuple[float, object, object]], whole: bool = True):
        """``bins``: ``(max_agreement, search section, built search)`` in increasing ``max_agreement``, the last 1."""
        if probe < 1 or not bins:
            raise ValueError(f"auto needs search.probe >= 1 and a bin, got probe {probe} and {len(bins)} bins")
        self.engine, self.probe, self.bins, self.whole = engine, probe, bins, whole

    def pick(self, score: float) -> int:
        """The first bin whose ``max_agreement`` is at least ``score``."""
        return next((i for i, (most, _, _) in enumerate(self.bins) if score <= most + 1e-9), len(self.bins) - 1)

    def run(self, trees: list[Tree]) -> list[list[Node]]:
        """Probe every tree, then run each bin's search on the trees in it (all trees of a bin together)."""
        BestOfN(self.engine, self.probe, self.whole).run(trees)
        delimiter = self.engine.template.step_delimiter
        chosen: dict[int, list[int]] = {}
        for t, tree in enumerate(trees):
            score = agreement([extract_answer(leaf.text(delimiter)) for leaf in leaves(tree.root)])
            b = self.pick(score)
            method = self.bins[b][1].method
            tree.stats.count("auto_agreement", score)
            tree.stats.count(f"auto_bin_{b}")
            tree.stats.count(f"auto_{method}")
            chosen.setdefault(b, []).append(t)
        out: list[list[Node]] = [[] for _ in trees]
        for b, idx in chosen.items():
            _, section, built = self.bins[b]
            group = [trees[i] for i in idx]
            if section.method in REUSES_PROBES:
                keep = min(section.n, self.probe)
                for tree in group:
                    del tree.root.children[keep:]
                if section.n > keep:
                    BestOfN(self.engine, section.n - keep, section.whole).run(group)
                found = [list(leaves(tree.root)) for tree in group]
            elif section.method in CONTINUES_PROBES:
                found = built.run(group)
            else:
                for tree in group:
                    tree.root.children.clear()
                found = built.run(group)
            for i, f in zip(idx, found):
                out[i] = f
        return out
