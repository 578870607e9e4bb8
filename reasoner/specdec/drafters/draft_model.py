"""A smaller model with the same tokenizer drafts: a chain of k tokens, or a dynamic tree grown from one global
best-first heap by cumulative draft probability under a node budget (DySpec, Xiong et al. 2024, "DySpec: Faster
Speculative Decoding with Dynamic Token Tree Structure").

DySpec: the draft probability predicts acceptance, so the best tree of N nodes holds the N candidates with the
highest cumulative draft probability anywhere in the tree; a max-heap of candidate children (each node's j-th
most likely continuation, scored by its parent's score times that probability) is popped one at a time, and a
popped node's own children enter the heap once the draft model has run on it. Where the draft is confident the
tree goes deep along the likely path; where it hesitates, it widens (``BestFirst``). Deviation: a draft forward
per popped node is too many forwards, so each forward feeds a round of pops: after the best candidate, others
join the round only while they beat the best candidate's expected child (its score times the running mean of
top-1 draft probabilities) -- the pops the one-at-a-time greedy order would also make next -- at most ``top_k``
per round, at most ``num_tokens`` draft forwards (the tree's depth bound); after the last forward the budget
left is filled from the heap.

Sampling: a node's children are its draft distribution's Gumbel-top-k sample without replacement (Sequoia /
recursive speculative decoding) and the trees carry these distributions for multi-step speculative sampling. Whether
a node gets a j-th child is decided from the j-th largest probability of its distribution (not from which token the
j-th draw is), so the multi-step rule stays exact. Greedy: the most likely tokens. Candidates below ``min_score``
are never popped (a cut on the draft's own cumulative probability). Chains can instead stop by SpecDec++'s trained
acceptance head (``acceptance``, ``token_speculation.acceptance_head``): after each drafted token, once the head's
probability that some token of the chain is rejected exceeds the threshold, the chain goes to the target without a
draft forward on that token.

The draft model's KV cache follows the sequence without recomputation: tokens it has already seen (the accepted
nodes it expanded) are kept, the rest dropped; tokens it has not seen (the bonus token, accepted leaves) are fed
in the next round 0 together with the root.

With ``online`` (``token_speculation.online``) the draft model learns from the target's verdicts as it drafts
(Online Speculative Decoding, ``specdec/online.py``).
"""

from __future__ import annotations

import heapq

import numpy as np
import torch

from ..acceptance import StopRule
from ..cache import RaggedCache
from ..tree import DraftTree
from ..verify import sampling_probs
from .base import Drafter


class BestFirst:
    """DySpec's heap for one row: candidate children ``(parent, j)`` scored by the parent's cumulative draft
    probability times the j-th largest probability of its distribution. Popping one adds it to the tree and puts
    the parent's next candidate in the heap; ``offer`` puts a node's first candidate in once its distribution is
    known."""

    def __init__(self, tree: DraftTree, budget: int, depth: int, min_score: float):
        self.tree, self.budget, self.depth, self.min_score = tree, budget, depth, min_score
        self.heap: list[tuple[float, int, int, int]] = []  # (-score, order, parent, j)
        self.draws: dict[int, tuple] = {}  # node -> (q, tokens in draw order, sorted probabilities)
        self.score, self.level = {-1: 1.0}, {-1: 0}
        self.pushed = 0

    def offer(self, node: int, q, tokens: list[int], values: list[float]) -> None:
        self.draws[node] = (q, tokens, values)
        self._push(node, 0)

    def _push(self, node: int, j: int) -> None:
        values = self.draws[node][2]
        if j < len(values) and values[j] > 0:
            self.pushed += 1
            heapq.heappush(self.heap, (-self.score[node] * values[j], self.pushed, node, j))

    def open(self) -> bool:
        """Whether a candidate can still be popped."""
        return bool(self.heap) and len(self.tree) < self.budget and -self.heap[0][0] >= self.min_score

    def pop_round(self, width: int, ratio: float | None) -> list[int]:
        """Pop the best candidate, then others while they score at least ``ratio`` times its score (``None``: no
        such limit), ``width`` at most; returns the popped nodes the draft model should run on (none once the
        budget is spent, or at the depth bound)."""
        new: list[int] = []
        while self.heap and len(self.tree) < self.budget and len(new) < width:
            score = -self.heap[0][0]
            if score < self.min_score or (new and ratio is not None and score < ratio * self.score[new[0]]):
                break
            _, _, parent, j = heapq.heappop(self.heap)
            q, tokens, _ = self.draws[parent]
            if j == 0:
                self.tree.dists[parent] = q
            node = self.tree.add(tokens[j], parent)
            self.score[node], self.level[node] = score, self.level[parent] + 1
            new.append(node)
            self._push(parent, j + 1)
        if len(self.tree) >= self.budget:
            return []
        return [n for n in new if self.level[n] < self.depth]


class DraftModel(Drafter):
    name = "draft_model"

    def __init__(
        self,
        model,
        tree: str = "chain",
        num_tokens: int = 6,
        nodes: int = 24,
        top_k: int = 4,
        min_score: float = 0.0,
        seed: int = 0,
        stats=None,
        vocab_size: int | None = None,
        head=None,
        threshold: float = 0.5,
        sampling_head=None,
        online=None,
    ):
        self.model = model
        self.online = online  # Online Speculative Decoding: an ``online.OnlineDistiller`` training ``model``
        # SpecDec++: an ``acceptance.AcceptanceHead`` stops each chain once P(some token rejected) > threshold
        # (``sampling_head``: the one used when sampling, if not ``head``)
        self.head, self.threshold = head, threshold
        self.heads = (head, sampling_head or head)
        if head is not None and tree != "chain":
            raise ValueError("token_speculation.acceptance_head stops chains: use tree: chain")
        self.vocab_size = vocab_size  # the target's logits width: q must be over the same tokens as p
        self.device = next(model.parameters()).device
        self.tree, self.num_tokens, self.nodes, self.top_k, self.min_score = tree, num_tokens, nodes, top_k, min_score
        self.top1 = 0.5  # running mean of the top-1 draft probability: a popped node's expected best child
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.stats = stats  # the Stats draft forwards are charged to (the target backend's)

    def begin(self, seqs, temperature, top_p):
        self.temperature, self.top_p = temperature, top_p
        self.head = self.heads[temperature > 0]
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
        """Children candidates of nodes with draft distributions q [N, V]: tokens in draw order (the most likely
        first when greedy; Gumbel-top-k, a sample without replacement in order, when sampling) and the sorted
        top probabilities that score them (decided from q alone, never from which token was drawn)."""
        k = min(1 if self.tree == "chain" else self.top_k, q.shape[-1])
        top = q.topk(k, dim=-1)
        if self.temperature == 0:
            index = top.indices
        else:
            uniform = torch.rand(q.shape, generator=self.generator, device=q.device).clamp_(min=1e-20)
            index = (q.log() - (-uniform.log()).log()).topk(k, dim=-1).indices
        values = top.values.tolist()
        if values:
            self.top1 = 0.9 * self.top1 + 0.1 * float(top.values[:, 0].mean())
        return index.tolist(), values

    def _offer(self, heaps: list[BestFirst], rows: list[tuple[int, int]], q: torch.Tensor, hidden=None) -> None:
        """Row ``b``'s node ``n`` (``rows[i] == (b, n)``; -1: the root) has the draft distribution ``q[i]``, drawn
        from the draft's last hidden state ``hidden[i]`` (kept for the acceptance head)."""
        tokens, values = self._draw(q)
        for i, (b, node) in enumerate(rows):
            heaps[b].offer(node, q[i], tokens[i], values[i])
            if hidden is not None:
                self.hidden[b, node] = hidden[i]

    def _forward(self, ids, depth, sees):
        """The draft forward: logits, and the last hidden states when a head reads them (else ``None``)."""
        args = [torch.from_numpy(x).to(self.device) for x in (ids, depth, sees)]
        if self.head is None:  # the plain cache interface: forward(ids, depth, sees) -> log-probs
            return self.cache.forward(*args), None
        return self.cache.forward(*args, hidden=True)

    def _stop(self, heaps: list[BestFirst], trees: list[DraftTree], chosen: list[list[int]], rule) -> None:
        """SpecDec++: score each row's newly drafted token with the head; a row whose P(some drafted token is
        rejected) crossed the threshold drafts no further (its heap closes, its token gets no draft forward)."""
        rows = [(b, nodes[0]) for b, nodes in enumerate(chosen) if nodes]
        if not rows:
            return
        parents = [(b, trees[b].parents[n]) for b, n in rows]
        stops = rule.stops(
            [b for b, _ in rows],
            torch.stack([self.hidden[p] for p in parents]),
            torch.stack([heaps[b].draws[n][0] for b, n in parents]),
            torch.tensor([trees[b].tokens[n] for b, n in rows], device=self.device),
        )
        for (b, _), stop in zip(rows, stops):
            if stop:
                heaps[b].budget = len(trees[b])
                chosen[b] = []

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
        self.hidden = {}  # (row, node) -> the draft's last hidden state where node's children were drawn
        logits, hidden = self._forward(ids, depth, sees)
        forwards = 1
        self.pending = [len(p) for p in pending]
        self.width = P  # speculative columns so far
        self.column = [dict() for _ in range(B)]  # node -> speculative column, for nodes the draft model has seen
        chain = self.tree == "chain"
        deepest = min(self.num_tokens, self.limit or self.num_tokens)  # SmartSpec's longest draft: no forward past it
        budget = min(self.num_tokens if chain else self.nodes, self.limit or self.nodes)
        heaps = [BestFirst(t, budget, deepest, self.min_score) for t in trees]
        last_column = (torch.arange(B), torch.tensor(self.pending) - 1)
        self._offer(
            heaps,
            [(b, -1) for b in range(B)],
            self._dist(logits[last_column]),
            None if hidden is None else hidden[last_column],
        )
        rule = StopRule(self.head, self.threshold, B) if self.head is not None else None
        while True:
            last = forwards >= deepest  # no forward left: fill the budget from the heap
            chosen = [
                h.pop_round(1 if chain else (h.budget if last else self.top_k), None if last else self.top1)
                for h in heaps
            ]
            if rule is not None:
                self._stop(heaps, trees, chosen, rule)
            W = 0 if last else max(len(c) for c in chosen)
            if W == 0:
                if not last and any(h.open() for h in heaps):
                    continue  # the popped nodes are at the depth bound: pop on without a forward
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
                    while a >= 0:  # its ancestors, all run on (seen by the draft model) before it
                        sees[b, j, column[a]] = True
                        a, d = tree.parents[a], d + 1
                    depth[b, j] = self.pending[b] - 1 + d
                    column[node] = self.width + j
            logits, hidden = self._forward(ids, depth, sees)
            forwards += 1
            self.width += W
            rows = [(b, node) for b, nodes in enumerate(chosen) for node in nodes]
            index = [(b, j) for b, nodes in enumerate(chosen) for j in range(len(nodes))]
            at = ([b for b, _ in index], [j for _, j in index])
            self._offer(heaps, rows, self._dist(logits[at]), None if hidden is None else hidden[at])
        self._charge(forwards)
        for tree, heap in zip(trees, heaps):  # each node's cumulative draft probability: its acceptance estimate
            tree.scores = [heap.score[i] for i in range(len(tree))]
        return trees

    def update(self, seqs, verdicts):
        if self.online is not None:
            self.online.record(seqs, verdicts)
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
        if self.online is not None:
            self.online.finished(len(finished))
