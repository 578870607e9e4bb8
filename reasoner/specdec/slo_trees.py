"""Token trees sized per request by its TPOT SLO (AdaServe; Li et al. 2025, "AdaServe: Accelerating Multi-SLO LLM
Serving with SLO-Customized Speculative Decoding", arXiv 2501.12162).

Each step the draft model grows a candidate tree per row (DySpec's best-first heap, ``drafters.draft_model``); a
node's path probability under the draft estimates the chance the target accepts it, so a tree's expected emitted
tokens are 1 (the bonus token) plus the sum of its nodes' path probabilities. AdaServe's speculate-select-verify
step then picks, from the candidates, what the verification batch checks (``select_trees``):

1. SLO-customized selection: each row gets the smallest tree whose expected emitted tokens reach what its SLO
   needs this step -- its nodes taken best first by path probability (a child never beats its parent, so the best
   ``m`` nodes are a tree, and the most expected tokens any ``m`` nodes can give);
2. throughput-optimized selection: the verification budget left goes to the candidates with the highest path
   probability across all rows, again best first, while a node raises the step's expected tokens per second.

What a row needs (``SLOTrees``): to be on its SLO's track at the end of the step, ``(elapsed + T) / TPOT`` tokens
in all, minus the tokens it has emitted (a row behind its pace asks for more, one ahead for nothing), ``T`` being
the step's predicted seconds with the full budget, from SmartSpec's fitted step-time model
(``adaptive.SmartSpec.latency``, fitted online on measured steps). The budget is ``slo_budget`` draft tokens per live
row (a verification batch of fixed size, as AdaServe fixes its batch's token budget so the step time is known).

Deviations: AdaServe fills the budget in step 2 (on a GPU a verification forward costs about the same up to it);
on a CPU every verified token costs time (``c1`` of the step-time model), so a leftover node is taken only while
``(E + p) / T(n + 1) > E / T(n)`` (SmartSpec's goodput test; E the expected emitted tokens so far, p the node's path
probability, T the predicted step seconds for n verified draft tokens); before any step is measured it fills the
budget. AdaServe declares a step infeasible when the minimum trees exceed the budget; here the rows are then
served most urgent first (the largest need this step), each its minimum while the
budget lasts and the first that does not fit what is left, and the rest none beyond the bonus token. A row's pace
is measured from the start of its ``generate`` call (the backend knows no earlier time: a request's queueing and
its earlier calls are not seen). The budget per row is a recipe value, not profiled per GPU.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable

from .adaptive import SmartSpec
from .tree import DraftTree


def select_trees(
    probs: list[list[float]],
    parents: list[list[int]],
    needs: list[float],
    budget: int,
    step_seconds: Callable[[int], float] | None = None,
) -> list[list[int]]:
    """AdaServe's selection. ``probs[r][i]``: row r's candidate node i's path probability under the draft;
    ``parents[r][i]``: its parent (``-1``: the root; parents come first); ``needs[r]``: the expected accepted draft
    tokens row r needs this step; ``budget``: draft tokens the verification batch takes in all; ``step_seconds``:
    the predicted step time for a number of verified draft tokens (given, a leftover node is taken only while it
    raises expected tokens per second). Returns each row's kept nodes in candidate order (every kept node's parent
    is kept)."""
    rows = len(probs)
    children: list[dict[int, list[int]]] = []
    for par in parents:
        kids: dict[int, list[int]] = {}
        for i, p in enumerate(par):
            kids.setdefault(p, []).append(i)
        children.append(kids)
    frontier = [[(-probs[r][i], i) for i in children[r].get(-1, [])] for r in range(rows)]
    for f in frontier:
        heapq.heapify(f)
    kept: list[list[int]] = [[] for _ in range(rows)]

    def take(r: int) -> float:
        neg, i = heapq.heappop(frontier[r])
        kept[r].append(i)
        for c in children[r].get(i, []):
            heapq.heappush(frontier[r], (-probs[r][c], c))
        return -neg

    # 1. the minimum trees, most urgent row first
    left = budget
    for r in sorted(range(rows), key=lambda r: -needs[r]):
        got = 0.0
        while got < needs[r] - 1e-9 and frontier[r] and left > 0:
            got += take(r)
            left -= 1
    # 2. the budget left, to the best candidates of every row
    best = [(f[0][0], r) for r, f in enumerate(frontier) if f]
    heapq.heapify(best)
    taken = budget - left
    expected = rows + sum(probs[r][i] for r in range(rows) for i in kept[r])
    while best and left > 0:
        if step_seconds is not None:
            p = -best[0][0]
            if (expected + p) / step_seconds(taken + 1) <= expected / step_seconds(taken):
                break
        _, r = heapq.heappop(best)
        expected += take(r)
        taken, left = taken + 1, left - 1
        if frontier[r]:
            heapq.heappush(best, (frontier[r][0][0], r))
    return [sorted(k) for k in kept]


class SLOTrees:
    """The per-step controller the decoding loop runs when ``token_speculation.slo_trees`` is on: it knows each
    row's TPOT and pace, predicts the step time, and cuts the drafter's candidate trees (``DraftTree.scores``)."""

    def __init__(self, budget_per_row: int):
        self.budget_per_row = budget_per_row
        self.latency = SmartSpec(budget_per_row)  # its step-time model alone (record / latency), kept across calls

    def begin(self, tpot_ms: list[float | None]) -> None:
        """A new batch; ``tpot_ms[r]``: row r's TPOT SLO (``None``: no SLO, leftover budget only)."""
        self.tpot = [None if t is None else t / 1000 for t in tpot_ms]
        self.start = time.perf_counter()
        self.emitted = [0] * len(tpot_ms)
        self.latency.begin(len(tpot_ms))

    def step_seconds(self, drafted: int) -> float:
        """The predicted seconds of a step verifying ``drafted`` draft tokens over the live rows."""
        c0, c1, c2 = self.latency.latency()
        return max(c0 + c1 * (len(self.tpot) + drafted) + c2 * self.budget_per_row, 1e-6)

    def needs(self) -> list[float]:
        """Expected accepted draft tokens each row needs this step to be on its SLO's track after it."""
        rows = len(self.tpot)
        if self.latency.sums[0, 0] < 1e-9:  # nothing measured yet: no SLO can be turned into tokens
            return [0.0] * rows
        step = self.step_seconds(rows * self.budget_per_row)  # the full budget's step
        elapsed = time.perf_counter() - self.start
        return [
            0.0 if t is None else max(0.0, (elapsed + step) / t - e - 1.0)  # the bonus token comes anyway
            for t, e in zip(self.tpot, self.emitted)
        ]

    def select(self, trees: list[DraftTree]) -> tuple[list[DraftTree], list[list[int]]]:
        """The trees to verify and, per row, the candidate node each kept node was (to map verdicts back)."""
        for t in trees:
            if t.scores is None:
                raise ValueError("token_speculation.slo_trees needs a drafter that scores its nodes: draft_model")
        measured = self.latency.sums[0, 0] >= 1e-9
        kept = select_trees(
            [t.scores for t in trees],
            [t.parents for t in trees],
            self.needs(),
            self.budget_per_row * len(trees),
            self.step_seconds if measured else None,
        )
        return [t.subtree(k) for t, k in zip(trees, kept)], kept

    def record(self, trees: list[DraftTree], emitted: list[int], accepted: list[int], seconds: float) -> None:
        self.emitted = [e + n for e, n in zip(self.emitted, emitted)]
        depths = [max(t.depths(), default=0) for t in trees]
        self.latency.record([len(t) for t in trees], accepted, depths, seconds)

    def select_rows(self, keep: list[int]) -> None:
        self.tpot = [self.tpot[r] for r in keep]
        self.emitted = [self.emitted[r] for r in keep]
        self.latency.select_rows(keep)
