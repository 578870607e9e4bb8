"""A draft token tree: what every drafter returns and what verification checks in one forward."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class DraftTree:
    """Nodes in topological order (a parent before its children); ``parents[i] == -1`` hangs node ``i`` under the
    root, the last token of the sequence. Siblings are tried in the order they were added.

    ``dists`` is set by drafters that sample: for a parent (``-1`` for the root) the draft distribution its
    children were drawn from, without replacement and in order (a vocabulary-sized tensor, or a sparse
    ``{token: probability}`` dict); verification then uses multi-step speculative sampling. Without it (or without
    an entry for a parent) the drafts are deterministic (point masses).

    ``scores`` is set by drafters that estimate acceptance: each node's path probability under the draft (AdaServe's
    selection, ``slo_trees``, reads it)."""

    tokens: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    dists: dict[int, torch.Tensor | dict[int, float]] | None = None
    scores: list[float] | None = None

    def add(self, token: int, parent: int = -1) -> int:
        self.tokens.append(int(token))
        self.parents.append(parent)
        return len(self.tokens) - 1

    def add_chain(self, tokens, parent: int = -1) -> int:
        for t in tokens:
            parent = self.add(t, parent)
        return parent

    def __len__(self) -> int:
        return len(self.tokens)

    def children(self) -> list[list[int]]:
        """``children()[i + 1]`` lists node ``i``'s children; ``children()[0]`` the root's."""
        kids: list[list[int]] = [[] for _ in range(len(self.tokens) + 1)]
        for i, p in enumerate(self.parents):
            kids[p + 1].append(i)
        return kids

    def depths(self) -> list[int]:
        """Depth of each node; the root's children are at depth 1."""
        d: list[int] = []
        for p in self.parents:
            d.append(1 if p < 0 else d[p] + 1)
        return d

    def path(self, node: int) -> list[int]:
        """Tokens from the root's child down to ``node``."""
        out = []
        while node >= 0:
            out.append(self.tokens[node])
            node = self.parents[node]
        return out[::-1]

    def subtree(self, keep: list[int]) -> DraftTree:
        """The tree of nodes ``keep`` (ascending, each one's parent kept), renumbered in that order. Each node's kept
        children must be a prefix of its children (a sampled tree's siblings are draws in order)."""
        index = {-1: -1}
        for new, old in enumerate(keep):
            index[old] = new
        dists = None if self.dists is None else {index[p]: q for p, q in self.dists.items() if p in index}
        scores = None if self.scores is None else [self.scores[i] for i in keep]
        return DraftTree([self.tokens[i] for i in keep], [index[self.parents[i]] for i in keep], dists, scores)

    def merge(self, other: DraftTree) -> DraftTree:
        """This tree with ``other``'s paths fused in by longest prefix matching (RASD's tree fusion): each path of
        ``other`` follows the nodes already here with its tokens, and only the rest of it hangs below the deepest
        match as a new branch, so no (parent, token) is verified twice. This tree's nodes keep their indices; the
        new ones come after. A node that ``other`` continues loses its draft distribution and its children are
        verified as point masses (lossless for any children), whether or not the continuation matched a drawn
        child: multi-step sampling is exact only averaged over the draws, so picking the rule by what was drawn
        would bias it."""
        fused = DraftTree(list(self.tokens), list(self.parents), None if self.dists is None else dict(self.dists))
        index = {(p, t): i for i, (t, p) in enumerate(zip(self.tokens, self.parents))}
        match: dict[int, int] = {-1: -1}  # other's node -> the fused tree's
        for i, (t, p) in enumerate(zip(other.tokens, other.parents)):
            parent = match[p]
            node = index.get((parent, t))
            if node is None:
                node = index[parent, t] = fused.add(t, parent)
            if fused.dists is not None:
                fused.dists.pop(parent, None)
            match[i] = node
        return fused
