"""A smaller model with the same tokenizer drafts: a chain of k tokens, or a dynamic tree grown best-first by
cumulative draft probability under a node budget (DySpec / EAGLE-2).

Each round runs the draft model once on the nodes it expands (a tree mask, like verification) and draws their
children: the most likely tokens when greedy, a sample without replacement (Gumbel-top-k; Sequoia / RSD) when
sampling, so the trees carry their draft distributions for multi-step speculative sampling. A node gets as many
children as it takes to cover ``cover`` of its draft probability (at most ``top_k``); nodes whose cumulative
probability falls below ``min_score`` are not expanded (the SpecDec++ stop rule, with the draft's own probability
as the acceptance predictor instead of a trained head). How many children a node gets is decided from its draft
distribution before they are drawn, which keeps the multi-step rule exact.

The draft model's KV cache follows the sequence without recomputation: tokens it has already seen (the accepted
nodes it expanded) are kept, the rest dropped; tokens it has not seen (the bonus token, accepted leaves) are fed
in the next round 0 together with the root.
"""

from __future__ import annotations

import numpy as np
import torch

from ..cache import RaggedCache
from ..tree import DraftTree
from ..verify import sampling_probs
from .base import Drafter


class DraftModel(Drafter):
    name = "draft_model"

    def __init__(
        self,
        model,
        tree: str = "chain",
        num_tokens: int = 6,
        nodes: int = 24,
        top_k: int = 4,
        cover: float = 0.8,
        min_score: float = 0.0,
        seed: int = 0,
        stats=None,
        vocab_size: int | None = None,
    ):
        self.model = model
        self.vocab_size = vocab_size  # the target's logits width: q must be over the same tokens as p
        self.device = next(model.parameters()).device
        self.tree, self.num_tokens, self.nodes, self.top_k, self.cover, self.min_score = (
            tree,
            num_tokens,
            nodes,
            top_k,
            cover,
            min_score,
        )
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.stats = stats  # the Stats draft forwards are charged to (the target backend's)

    def begin(self, seqs, temperature, top_p):
        self.temperature, self.top_p = temperature, top_p
        distinct = list(dict.fromkeys(tuple(s[:-1]) for s in seqs))
        self.cache = RaggedCache(self.model, len(distinct), self.device)
        if any(distinct):
            width = max(len(s) for s in distinct)
            ids = torch.zeros((len(distinct), width), dtype=torch.long)
            mask = torch.zeros((len(distinct), width), dtype=torch.long)
            for i, s in enumerate(distinct):
                if s:
                    ids[i, width - len(s) :], mask[i, width - len(s) :] = torch.tensor(s), 1
            with torch.inference_mode():
                out = self.model(
                    input_ids=ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    position_ids=(mask.cumsum(-1) - 1).clamp(min=0).to(self.device),
                    past_key_values=self.cache.cache,
                    use_cache=True,
                    logits_to_keep=1,
                )
            self.cache = RaggedCache.from_prefill(self.model, out.past_key_values, mask.to(self.device))
            self._charge(1)
        index = {s: i for i, s in enumerate(distinct)}
        self.cache.select_rows([index[tuple(s[:-1])] for s in seqs])
        self.fed = [len(s) - 1 for s in seqs]  # tokens of each row in the draft cache

    def _charge(self, forwards: int) -> None:
        if self.stats is not None:
            self.stats.role("drafter").forward_passes += forwards

    def _dist(self, logits: torch.Tensor) -> torch.Tensor:
        """The draft distribution over the target's vocabulary. Embedding tables are often padded past the
        tokenizer (Qwen2.5 1.5B: 151936 rows, 7B: 152064), so the draft's logits are cut or padded (never drawn)
        to the target's width."""
        v = self.vocab_size
        if v is not None and logits.shape[-1] != v:
            if logits.shape[-1] > v:
                logits = logits[..., :v]
            else:
                logits = torch.cat(
                    [logits, logits.new_full((*logits.shape[:-1], v - logits.shape[-1]), float("-inf"))], dim=-1
                )
        if self.temperature == 0:
            return torch.softmax(logits, dim=-1)
        return sampling_probs(logits, self.temperature, self.top_p)

    def _draw(self, q: torch.Tensor) -> tuple[list[list[int]], list[list[float]]]:
        """Children of nodes with draft distributions q [N, V], and their draft probabilities. How many a node
        gets is decided from its q alone (enough to cover ``cover`` of it); then they are drawn: the most likely
        when greedy, Gumbel-top-k (a sample without replacement, in order) when sampling."""
        k = min(self.top_k if self.tree == "dynamic" else 1, q.shape[-1])
        top = q.topk(k, dim=-1)
        w = ((top.values.cumsum(-1) < self.cover).sum(-1) + 1).clamp_(max=k).minimum((q > 0).sum(-1))
        if self.temperature == 0:
            index = top.indices
        else:
            uniform = torch.rand(q.shape, generator=self.generator, device=q.device).clamp_(min=1e-20)
            index = (q.log() - (-uniform.log()).log()).topk(k, dim=-1).indices
        tokens, probs = index.tolist(), q.gather(-1, index).tolist()
        return [t[:n] for t, n in zip(tokens, w.tolist())], [p[:n] for p, n in zip(probs, w.tolist())]

    @torch.inference_mode()
    def draft(self, seqs):
        B = len(seqs)
        self.drafted = True
        trees = [DraftTree(dists={}) for _ in range(B)]
        # round 0: tokens the draft model has not seen yet (always including the root), as a chain
        pending = [s[f:] for s, f in zip(seqs, self.fed)]
        P = max(len(p) for p in pending)
        lens = np.array([len(p) for p in pending])[:, None, None]
        ids = np.zeros((B, P), dtype=np.int64)
        for b, p in enumerate(pending):
            ids[b, : len(p)] = p
        i, j = np.arange(P)[:, None], np.arange(P)[None, :]
        sees = ((j <= i) & (i < lens)) | (i == j)  # a causal chain; padding sees itself
        depth = np.tile(np.arange(P), (B, 1))
        logits = self.cache.forward(*(torch.from_numpy(x).to(self.device) for x in (ids, depth, sees)))
        forwards = 1
        self.pending = [len(p) for p in pending]
        self.width = P  # speculative columns so far
        self.column = [dict() for _ in range(B)]  # node -> speculative column, for nodes the draft model has seen
        q_root = self._dist(logits[torch.arange(B), torch.tensor(self.pending) - 1])
        frontier = [[] for _ in range(B)]  # (cumulative draft probability, node) of nodes not expanded yet
        scores = [[] for _ in range(B)]
        kids, probs = self._draw(q_root)
        for b in range(B):
            self._expand(trees[b], scores[b], frontier[b], -1, q_root[b], kids[b], probs[b])
        for _ in range(self.num_tokens - 1):
            chosen = []
            for b in range(B):
                frontier[b].sort(key=lambda sn: -sn[0])
                room = self.top_k if self.tree == "dynamic" else 1
                chosen.append(
                    [n for s, n in frontier[b][:room] if s >= self.min_score] if len(trees[b]) < self.nodes else []
                )
                frontier[b] = frontier[b][len(chosen[b]) :]
            W = max(len(c) for c in chosen)
            if W == 0:
                break
            ids = np.zeros((B, W), dtype=np.int64)
            depth = np.zeros((B, W), dtype=np.int64)
            sees = np.zeros((B, W, self.width + W), dtype=bool)
            sees[:, np.arange(W), self.width + np.arange(W)] = True
            for b, nodes in enumerate(chosen):
                tree, column = trees[b], self.column[b]
                for j, node in enumerate(nodes):
                    ids[b, j] = tree.tokens[node]
                    sees[b, j, : self.pending[b]] = True
                    a, d = tree.parents[node], 1
                    while a >= 0:  # its ancestors, all expanded (so seen by the draft model) before it
                        sees[b, j, column[a]] = True
                        a, d = tree.parents[a], d + 1
                    depth[b, j] = self.pending[b] - 1 + d
                    column[node] = self.width + j
            logits = self.cache.forward(*(torch.from_numpy(x).to(self.device) for x in (ids, depth, sees)))
            forwards += 1
            self.width += W
            rows = [(b, j) for b, nodes in enumerate(chosen) for j in range(len(nodes))]
            q = self._dist(logits[[b for b, _ in rows], [j for _, j in rows]])
            kids, probs = self._draw(q)
            for i, (b, j) in enumerate(rows):
                self._expand(trees[b], scores[b], frontier[b], chosen[b][j], q[i], kids[i], probs[i])
        self._charge(forwards)
        return trees

    def _expand(
        self,
        tree: DraftTree,
        scores: list[float],
        frontier: list,
        node: int,
        q: torch.Tensor,
        kids: list[int],
        probs: list[float],
    ) -> None:
        kids = kids[: self.nodes - len(tree)]  # the budget left, known before the draw
        if not kids:
            return
        tree.dists[node] = q
        score = scores[node] if node >= 0 else 1.0
        for tok, p in zip(kids, probs):
            scores.append(score * p)
            frontier.append((score * p, tree.add(tok, node)))

    def update(self, seqs, verdicts):
        if not self.drafted:  # no speculative columns: the new tokens are fed with the next draft
            return
        self.drafted = False
        keep = []
        for b, v in enumerate(verdicts):
            seen = [self.column[b][n] for n in v.path if n in self.column[b]]
            keep.append(list(range(self.pending[b])) + seen)
            self.fed[b] += self.pending[b] + len(seen)
        self.cache.commit(keep)

    def select_rows(self, keep, finished):
        self.cache.select_rows(keep)
        self.fed = [self.fed[r] for r in keep]
