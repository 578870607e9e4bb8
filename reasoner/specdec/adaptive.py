"""Draft length per request and step by goodput (SmartSpec; Liu et al. 2024, "Optimizing Speculative Decoding for
Serving Large Language Models Using Goodput").

Goodput is expected emitted tokens per second of the batch. Each request r has an acceptance rate alpha_r, each
draft token accepted with that probability if the ones before it were, so a draft of k tokens emits
1 + alpha + ... + alpha^k tokens in expectation; a step costs T = c0 + c1 * (batch tokens) + c2 * (longest draft),
the batch tokens being the rows plus every drafted token (the verifying forward) and the longest draft the draft
model's sequential forwards. Per step, SmartSpec picks the lengths k_r that maximise
sum_r E[emitted_r(k_r)] / T: for each candidate longest draft, tokens are added to the requests in order of their
marginal gain alpha_r^j while that raises goodput; the best candidate wins. A request whose acceptance drops gets
a shorter draft, down to none, while the other requests of its batch keep theirs.

alpha_r is estimated per request as a moving average of its steps' acceptance rates (accepted draft tokens /
tokens tried, a rejection being a try), with a pseudo-count of the drafter's overall rate, so a request that drafts
nothing drifts back to the overall rate and is tried again. The step-time model is fitted by least squares on
every measured step (decayed), with steps of no and of full-length drafts now and then so both ends are measured.
Lengths cut the trees to their first k nodes, a prefix in node order, so every kept node keeps its parent and each
node's kept children are a prefix of its sibling order: the verification rules stay exact.

Deviations from the paper: its latency model is profiled offline per batch size; here it is fitted online (no
calibration run, and it follows the machine's load). Its length model is for chains; tree drafters get the same
model with k counting tree nodes, which overstates a tree's loss from a rejected node (the siblings are other
chances)."""

from __future__ import annotations

import heapq

import numpy as np

from .tree import DraftTree


class SmartSpec:
    def __init__(self, max_len: int, forget: float = 0.8, explore_every: int = 16, prior: float = 0.5):
        self.max_len, self.forget, self.explore_every = max_len, forget, explore_every
        self.total = [prior, 1.0]  # the drafter's acceptance rates and steps, all requests (decayed sums)
        self.rows: list[list[float]] = []  # per live request: [acceptance rates, steps] (decayed sums)
        self.sums = np.zeros((3, 4))  # decayed X^T [X | y] of the step-time model, X = (1, batch tokens, longest)
        self.steps = 0

    # -- requests --------------------------------------------------------------------------------------------

    def begin(self, rows: int) -> None:
        self.rows = [[0.0, 0.0] for _ in range(rows)]

    def select_rows(self, keep: list[int]) -> None:
        self.rows = [self.rows[r] for r in keep]

    def alpha(self, r: int) -> float:
        prior = self.total[0] / max(self.total[1], 1e-9)
        rates, steps = self.rows[r]
        return min((rates + prior) / (steps + 1.0), 0.99)

    # -- the step-time model ---------------------------------------------------------------------------------

    def latency(self) -> tuple[float, float, float]:
        """(c0, c1, c2) of step seconds = c0 + c1 * batch tokens + c2 * longest draft, by least squares. Where the
        two move (nearly) together -- at batch 1, or when every row drafts the same -- c1 is fitted alone and c2 on
        what it leaves unexplained. Slopes are kept non-negative (noise must not make drafting look free)."""
        S = self.sums
        n = S[0, 0]
        if n < 1e-9:
            return 1.0, 0.0, 0.0
        cov = lambda i, j: n * S[i, j] - S[0, i] * S[0, j]  # noqa: E731  (n^2 times the covariance; 3 = seconds)
        tt, kk, tk = cov(1, 1), cov(2, 2), cov(1, 2)
        c1 = c2 = -1.0
        if tt > 1e-9 and kk > 1e-9 and tk * tk < 0.95 * tt * kk:
            det = tt * kk - tk * tk
            c1 = (kk * cov(1, 3) - tk * cov(2, 3)) / det
            c2 = (tt * cov(2, 3) - tk * cov(1, 3)) / det
        if c1 < 0 or c2 < 0:
            c1 = max(cov(1, 3) / tt, 0.0) if tt > 1e-9 else 0.0
            c2 = max((cov(2, 3) - c1 * tk) / kk, 0.0) if kk > 1e-9 else 0.0
        return float((S[0, 3] - c1 * S[0, 1] - c2 * S[0, 2]) / n), float(c1), float(c2)

    # -- choosing lengths ------------------------------------------------------------------------------------

    def lengths(self) -> list[int]:
        """This step's draft length per live request: the goodput plan, or now and then no drafts / full drafts
        (so the step-time model sees both ends)."""
        self.steps += 1
        if self.steps <= 2 or self.steps % self.explore_every == 0:
            full = self.steps == 2 or (self.steps // self.explore_every) % 2 == 1
            return [self.max_len if full else 0] * len(self.rows)
        return self.plan()

    def plan(self) -> list[int]:
        """The lengths that maximise expected emitted tokens per predicted second."""
        R = len(self.rows)
        alphas = [self.alpha(r) for r in range(R)]
        c0, c1, c2 = self.latency()
        seconds = lambda tokens, longest: max(c0 + c1 * tokens + c2 * longest, 1e-6)  # noqa: E731
        best, best_goodput = [0] * R, R / seconds(R, 0)
        for longest in sorted({k for k in (1, 2, 4, 8, 16, 32, 64) if k < self.max_len} | {self.max_len}):
            ks, emitted, tokens = [0] * R, float(R), R
            gains = [(-a, r) for r, a in enumerate(alphas)]  # the next token's expected acceptance, per request
            heapq.heapify(gains)
            while gains:
                gain, r = heapq.heappop(gains)
                if (emitted - gain) / seconds(tokens + 1, longest) <= emitted / seconds(tokens, longest):
                    break
                ks[r], emitted, tokens = ks[r] + 1, emitted - gain, tokens + 1
                if ks[r] < longest:
                    heapq.heappush(gains, (gain * alphas[r], r))
            goodput = emitted / seconds(tokens, longest)
            if goodput > best_goodput:
                best, best_goodput = ks, goodput
        return best

    # -- learning ----------------------------------------------------------------------------------------------

    def record(self, lengths: list[int], accepted: list[int], depths: list[int], seconds: float) -> None:
        """One step: the lengths drafted, each request's accepted draft tokens and its tree's depth (a request
        that accepted fewer than its depth had one rejected try), and the step's wall time."""
        f = self.forget
        self.total = [self.total[0] * 0.99, self.total[1] * 0.99]
        for row, a, d in zip(self.rows, accepted, depths):
            tries = a + (1 if a < d else 0)
            row[0], row[1] = row[0] * f, row[1] * f
            if tries:  # this step's rate, one observation per step (a long accepted draft must not drown the rest)
                row[0], row[1] = row[0] + a / tries, row[1] + 1
                self.total = [self.total[0] + a / tries, self.total[1] + 1]
        x = np.array([1.0, len(self.rows) + sum(lengths), max(lengths, default=0)])
        self.sums = self.sums * 0.98 + np.outer(x, np.append(x, seconds))


def prefix(tree: DraftTree, size: int) -> DraftTree:
    """The tree's first ``size`` nodes (node indices unchanged)."""
    if len(tree) <= size:
        return tree
    dists = None if tree.dists is None else {p: q for p, q in tree.dists.items() if p < size}
    return DraftTree(tree.tokens[:size], tree.parents[:size], dists)
