"""FETCH's state merging: semantically equivalent sibling states become one hyper-node before selection.

Siblings (children of one node) whose last steps embed within ``distance`` of each other (scikit-learn's
agglomerative clustering, cosine metric, average linkage, as FETCH) are merged; a hyper-node is represented
by its best-scored member and carries that score (FETCH: the hyper-node's value is its members' max).
FETCH expands a hyper-node by sampling from its members in turn; we expand the best member, the one the
verifier prefers, so the merged states cost nothing more. Finished states are never merged (they are votes).

``Fetch`` is beam search with merging and without search-and-learn's refill: each kept hyper-node gets
``width`` children, so when merging leaves fewer distinct states, fewer steps are written. ``merge`` in the
recipe turns merging on inside beam search and MCTS as well.
"""

from __future__ import annotations

from collections import defaultdict

from reasoner.core.types import Node

from .beam import BeamSearch
from .embed import embed


class Merger:
    def __init__(self, distance: float = 0.15, model: str | None = None):
        if distance < 0:
            raise ValueError(f"search.merge_distance must be >= 0, got {distance}")
        self.distance, self.model = distance, model

    def groups(self, texts: list[str]) -> list[int]:
        """Cluster label of each text."""
        unique = list(dict.fromkeys(texts))
        if len(unique) < 2 or self.distance == 0:
            return [unique.index(t) for t in texts]
        from sklearn.cluster import AgglomerativeClustering

        labels = AgglomerativeClustering(
            n_clusters=None, metric="cosine", linkage="average", distance_threshold=self.distance
        ).fit_predict(embed(unique, self.model))
        of = dict(zip(unique, labels))
        return [int(of[t]) for t in texts]

    def merge(self, scored: list[tuple[Node, float]]) -> list[tuple[Node, float]]:
        """One (representative, score) per hyper-node, in first-seen order; merged nodes are counted on the
        tree as ``merged_states``."""
        by_parent: dict[int, list[tuple[Node, float]]] = defaultdict(list)
        for node, score in scored:
            by_parent[id(node.parent)].append((node, score))
        out = []
        for siblings in by_parent.values():
            labels = self.groups([n.step.text for n, _ in siblings])
            best: dict[int, tuple[Node, float]] = {}
            for (node, score), lab in zip(siblings, labels):
                if lab not in best or score > best[lab][1]:
                    best[lab] = (node, score)
            for (node, _), lab in zip(siblings, labels):
                if node is not best[lab][0]:
                    node.notes = (node.notes or {}) | {"merged_into": best[lab][0]}  # shown by `reasoner view`
            if len(best) < len(siblings):
                siblings[0][0].tree.stats.count("merged_states", len(siblings) - len(best))
            out += list(best.values())
        return out


class Fetch(BeamSearch):
    name = "fetch"
    refill = False

    def __init__(
        self,
        engine,
        verifier,
        n: int = 8,
        width: int = 4,
        aggregate: str = "last",
        merge_distance: float = 0.15,
        filter_duplicates: bool = False,
        lookahead: int = 0,
    ):
        super().__init__(
            engine, verifier, n, width, aggregate, filter_duplicates, lookahead, merger=Merger(merge_distance)
        )
