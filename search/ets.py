"""REBASE and ETS (Efficient Tree Search): level-by-level search with a width budget split by reward.

REBASE: every round the open leaves are ranked by their aggregated verifier score and the remaining width
(``n`` minus the trajectories already finished) is handed out greedily by a softmax of the scores at
``temperature`` (0.2): the best leaf gets ``ceil(rest * w_i / sum of remaining w)`` children, and so on
until the width is spent. Leaves that get nothing are dropped.

ETS prunes first with an integer program (as ETS's ``select_softmax_costmodel``): binary ``x_i`` keeps leaf
``i``, ``y_j`` keeps an ancestor node ``j``, ``c_k`` covers semantic cluster ``k``;

    maximise  sum_i O_i x_i - lambda_c (sum_j cost_j y_j + sum_i cost_i x_i) + (lambda_s / K) sum_k c_k
    s.t.      y_j <= sum_{i under j} x_i,  y_j >= x_i (i under j),  c_k <= sum_{i in k} x_i,  sum_i x_i >= 1

where ``O_i`` is REBASE's share for leaf ``i`` and a node's cost is its KV tokens over those of all open
paths (ETS charges every node the same, with a TODO to use token counts; we use them). Clusters come from
sentence embeddings of each leaf's last step, average-linkage cosine, cut at ``cluster_distance`` (ETS:
t = 0.05); the coverage term is used when ``lambda_s > 0`` and the leaves say more than one thing. The kept
leaves then share the width by REBASE's rule again. Solved with ``scipy.optimize.milp`` (HiGHS).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from reasoner.core.types import Node, Tree

from .common import expand_counts, path_scores
from .embed import cluster
from .kv import KVMeter


def rebase_allocation(scores: list[float], width: int, temperature: float) -> list[int]:
    """REBASE's children per leaf: softmax(scores / T), handed out greedily best first; sums to ``width``."""
    if not scores or width <= 0:
        return [0] * len(scores)
    s = np.asarray(scores, dtype=float) / temperature
    w = np.exp(s - s.max())
    order = np.argsort(-w, kind="stable")
    out, rest, mass = [0] * len(scores), width, float(w.sum())
    for i in order:
        if rest <= 0:
            break
        k = min(rest, math.ceil(rest * w[i] / mass - 1e-12))
        out[i], rest, mass = k, rest - k, mass - w[i]
    return out


@dataclass
class Program:
    """One ETS pruning problem: leaf weights and costs, ancestor costs, which leaves lie under each ancestor,
    and each leaf's cluster."""

    weights: list[float]
    leaf_costs: list[float]
    ancestor_costs: list[float]
    under: list[list[int]]  # per ancestor, the leaves below it
    clusters: list[int]
    lambda_c: float
    lambda_s: float

    def value(self, keep: list[bool]) -> float:
        """The objective of keeping ``keep`` (ancestors and coverage at their best given the leaves)."""
        k = len(set(self.clusters))
        v = sum(w for w, x in zip(self.weights, keep) if x) - self.lambda_c * sum(
            c for c, x in zip(self.leaf_costs, keep) if x
        )
        v -= self.lambda_c * sum(
            c for c, leaves in zip(self.ancestor_costs, self.under) if any(keep[i] for i in leaves)
        )
        return v + self.lambda_s / k * len({self.clusters[i] for i, x in enumerate(keep) if x})


def solve(p: Program) -> list[bool]:
    """The leaves to keep: the program's optimum, from ``scipy.optimize.milp``."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    n, m = len(p.weights), len(p.ancestor_costs)
    labels = sorted(set(p.clusters))
    k = len(labels)
    size = n + m + k  # variables: x (leaves), y (ancestors), c (clusters)
    c = np.zeros(size)
    c[:n] = -(np.asarray(p.weights) - p.lambda_c * np.asarray(p.leaf_costs))
    c[n : n + m] = p.lambda_c * np.asarray(p.ancestor_costs)
    c[n + m :] = -p.lambda_s / k
    rows, lo, hi = [], [], []

    def row(entries, lb, ub):
        r = np.zeros(size)
        for j, v in entries:
            r[j] += v
        rows.append(r), lo.append(lb), hi.append(ub)

    for j, leaves in enumerate(p.under):
        row([(n + j, 1.0)] + [(i, -1.0) for i in leaves], -np.inf, 0.0)  # y_j <= sum x_i
        for i in leaves:
            row([(n + j, 1.0), (i, -1.0)], 0.0, np.inf)  # y_j >= x_i
    for q, lab in enumerate(labels):
        row(
            [(n + m + q, 1.0)] + [(i, -1.0) for i, cl in enumerate(p.clusters) if cl == lab], -np.inf, 0.0
        )  # c_k <= sum x_i
    row([(i, 1.0) for i in range(n)], 1.0, np.inf)  # keep at least one leaf
    result = milp(
        c, constraints=LinearConstraint(np.array(rows), lo, hi), integrality=np.ones(size), bounds=Bounds(0, 1)
    )
    if not result.success:
        raise RuntimeError(f"ETS integer program failed: {result.message}")
    return [bool(round(v)) for v in result.x[:n]]


class Rebase:
    name = "rebase"
    prune = False

    def __init__(
        self,
        engine,
        verifier,
        n: int = 16,
        aggregate: str = "last",
        temperature: float = 0.2,
        lambda_c: float = 1.0,
        lambda_s: float = 1.5,
        cluster_distance: float = 0.05,
    ):
        if n < 1 or temperature <= 0:
            raise ValueError(f"{self.name} needs search.n >= 1 and search.temperature > 0, got {n} and {temperature}")
        self.engine, self.verifier, self.n, self.aggregate, self.temperature = (
            engine,
            verifier,
            n,
            aggregate,
            temperature,
        )
        self.lambda_c, self.lambda_s, self.cluster_distance = lambda_c, lambda_s, cluster_distance

    def run(self, trees: list[Tree]) -> list[list[Node]]:
        meter = KVMeter()
        finished: dict[Tree, list[Node]] = {t: [] for t in trees}
        plan: list[tuple[Node, int]] = [(t.root, self.n) for t in trees]
        while plan:
            children = [c for kids in expand_counts(self.engine, plan) for c in kids]
            scores = path_scores(self.verifier, children, self.aggregate)
            plan = []
            for t in trees:
                mine = [(c, s) for c, s in zip(children, scores) if c.tree is t]
                finished[t] += [c for c, _ in mine if c.terminal]
                open_ = [(c, s) for c, s in mine if not c.terminal]
                width = self.n - len(finished[t])
                if width <= 0 or not open_:
                    meter.observe(t, [])
                    continue
                leaves, values = [c for c, _ in open_], [s for _, s in open_]
                if self.prune and len(leaves) > 1:
                    keep = solve(self.program(leaves, values, width))
                    for c, x in zip(leaves, keep):
                        if not x:
                            c.notes = (c.notes or {}) | {"pruned": self.name}  # shown by `reasoner view`
                    leaves, values = [c for c, x in zip(leaves, keep) if x], [s for s, x in zip(values, keep) if x]
                    t.stats.count("ets_pruned", len(keep) - sum(keep))
                alloc = rebase_allocation(values, width, self.temperature)
                kept = [(c, k) for c, k in zip(leaves, alloc) if k > 0]
                plan += kept
                meter.observe(t, [c for c, _ in kept])
        meter.book()
        return [finished[t] for t in trees]

    def program(self, leaves: list[Node], values: list[float], width: int) -> Program:
        alloc = rebase_allocation(values, width, self.temperature)
        weights = [a / sum(alloc) for a in alloc]
        ancestors: dict[int, tuple[Node, list[int]]] = {}
        for i, leaf in enumerate(leaves):
            node = leaf.parent
            while node is not None and node.parent is not None:
                ancestors.setdefault(id(node), (node, []))[1].append(i)
                node = node.parent
        nodes = [leaf for leaf in leaves] + [a for a, _ in ancestors.values()]
        total = sum(len(x.step.token_ids) for x in nodes) or 1
        texts = [leaf.step.text for leaf in leaves]
        use_coverage = self.lambda_s > 0 and len(set(texts)) > 1
        return Program(
            weights=weights,
            leaf_costs=[len(x.step.token_ids) / total for x in leaves],
            ancestor_costs=[len(a.step.token_ids) / total for a, _ in ancestors.values()],
            under=[u for _, u in ancestors.values()],
            clusters=cluster(texts, self.cluster_distance) if use_coverage else [0] * len(leaves),
            lambda_c=self.lambda_c,
            lambda_s=self.lambda_s if use_coverage else 0.0,
        )


class ETS(Rebase):
    name = "ets"
    prune = True
