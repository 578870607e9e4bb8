"""RASD (Quan et al. 2025, "RASD: Retrieval-Augmented Speculative Decoding", Findings of ACL 2025): the draft
model's tree and a retrieval tree, the latter pruned by the draft model's confidence, fused by longest prefix
matching into one tree that the target verifies in one forward.

- Retrieval: SuffixDecoding's suffix trees over this request and earlier outputs (``Suffix``) give the retrieval
  tree of the row's context (the paper retrieves with PLD from the input or with REST from a datastore).
- Tree pruning: a retrieved branch is kept only when the draft model ranks its first token among its ``top_k``
  most likely at the root, the one draft position conditioned on the true context alone; continuations the draft
  model finds implausible are cut before they cost verification rows.
- Tree fusion (``DraftTree.merge``): each retrieved path follows the draft tree from the root as far as its tokens
  match, and only the rest hangs below the deepest match as a new branch; a shared prefix is one path.

Retrieval costs no forward, so retrieved branches are as long as SuffixDecoding's own budget lets them be (twice
the match length, at most ``nodes``), not cut at the draft model's ``num_tokens``: a retrieved path that agrees with
the draft chain continues it past the draft model's depth, which the paper gives as RASD's point (a longer
acceptance than the drafting time allows).

Deviations: the pruning rule is a top-k cut on the draft model's first-token distribution, as we read the paper's
description (its exact cut and hyperparameters may differ); drafting then retrieval run one after the other, as in
the paper. Sampling: on the nodes a retrieved path runs through, the children are verified as point masses (accept
x with probability p(x)) instead of by multi-step sampling with the draft distribution (``DraftTree.merge`` says
why); still lossless, but a sampled draft token there is accepted less often than with min(1, p/q).
"""

from __future__ import annotations

from ..tree import DraftTree
from .base import Drafter
from .draft_model import DraftModel
from .suffix import Suffix


def prune(retrieved: DraftTree, confidence, top_k: int) -> DraftTree:
    """``retrieved`` without the branches whose first token is not among the ``top_k`` most likely of the draft
    model's root distribution ``confidence`` (a vocabulary-sized tensor; ``None``: no branch is kept)."""
    if confidence is None or not len(retrieved):
        return DraftTree()
    top = confidence.topk(min(top_k, confidence.numel()))
    allowed = {t for t, p in zip(top.indices.tolist(), top.values.tolist()) if p > 0}
    kept, index = DraftTree(), {}
    for i, (t, p) in enumerate(zip(retrieved.tokens, retrieved.parents)):
        if p in index:
            index[i] = kept.add(t, index[p])
        elif p < 0 and t in allowed:
            index[i] = kept.add(t)
    return kept


class Rasd(Drafter):
    name = "rasd"

    def __init__(self, model: DraftModel, retrieval: Suffix, top_k: int = 4, stats=None):
        self.model, self.retrieval, self.top_k, self.stats = model, retrieval, top_k, stats

    def begin(self, seqs, temperature, top_p):
        self.model.begin(seqs, temperature, top_p)
        self.retrieval.begin(seqs, temperature, top_p)

    def draft(self, seqs):
        self.drafted = True
        drafts = self.model.draft(seqs)
        retrieved = self.retrieval.draft(seqs)
        self.sizes = [len(t) for t in drafts]  # nodes past these only retrieval proposed
        return [d.merge(prune(r, d.dists.get(-1) if d.dists else None, self.top_k)) for d, r in zip(drafts, retrieved)]

    def update(self, seqs, verdicts):
        if self.drafted and self.stats is not None:
            retrieved = sum(n >= size for v, size in zip(verdicts, self.sizes) for n in v.path)
            self.stats.count("token_spec.retrieval_accepted", retrieved)
        self.drafted = False
        self.model.update(seqs, verdicts)
        self.retrieval.update(seqs, verdicts)

    def select_rows(self, keep, finished):
        self.model.select_rows(keep, finished)
        self.retrieval.select_rows(keep, finished)
