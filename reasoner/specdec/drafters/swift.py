"""Self-speculation: the target drafts with a subset of its own sublayers, chosen while it decodes (SWIFT, Xia et
al. 2024, "SWIFT: On-the-Fly Self-Speculative Decoding for LLM Inference Acceleration", ICLR 2025).

No draft model: the draft is the target with some attention and MLP sublayers skipped (``layer_skip``), reading
the target's own KV cache of the committed tokens. Verification is the usual lossless one by the full model.

Two phases, as in the paper. *Optimization*: before each decoding step, one layer set is proposed -- at random
(``skip_ratio`` of the attention and MLP sublayers of every layer but the first and last), every 25th by Bayesian
optimization (a Gaussian process over the sets seen so far, upper confidence bound) -- and scored by its
*matchness*: one parallel, teacher-forced forward of the skipped model over the last ``context_window`` tokens the
target generated, counting how many of the target's next tokens its argmax predicts. The proposal replaces the
current set when it matches more. The search stops after ``search_budget`` steps, after a third of them without a
better set, or once matchness reaches 0.95 (SWIFT's 1000 / 300 / 0.95). *Acceleration*: the chosen set drafts a
chain of up to ``num_tokens`` tokens, stopping early once a drafted token's draft probability falls below
``stop_confidence`` (SWIFT's confidence-aware early stop, 0.8).

The search state lives in the drafter, across calls and batches: like SWIFT along its stream of inputs, the first
calls pay for the search and later ones draft with its result.

Deviations from the paper (and its code, github.com/hemingkx/SWIFT):
- Matchness is scored on the most recent ``context_window`` generated tokens of every row of the batch (SWIFT:
  the first 32 of one sequence), and the current set is re-scored on the same tokens in the same step, so the two
  are compared on equal text (scores of different windows are not comparable). It runs once every row has
  generated ``context_window`` tokens.
- Bayesian proposals maximise the acquisition over sets of the right size (random ones and one-swap neighbours of
  the current set) under a fixed Hamming-distance kernel; SWIFT's ``bayes_opt`` maximises it over the continuous
  box with a fitted Matern kernel and keeps the top coordinates.
- Drafts are chains; SWIFT's "dynamic verification" also adds each step's top-k alternatives as a tree (the tree
  rules here would verify them; the chain keeps the draft forward one token wide).
- The draft's early stop reads the drafted token's probability under the draft's untempered softmax (as SWIFT's
  code does), also when sampling.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..layer_skip import KINDS, DraftKV, Sublayer, check_layout, skipped_forward
from ..tree import DraftTree
from ..verify import sampling_probs
from .base import Drafter

log = logging.getLogger(__name__)

BAYES_EVERY = 25  # every 25th proposal comes from the Gaussian process (SWIFT's bayes_interval)
ENOUGH = 0.95  # matchness at which the search stops (SWIFT's max_score)
KAPPA = 2.5  # UCB exploration weight (SWIFT's)
NOISE = 1e-2  # GP observation noise (SWIFT's alpha)


def candidate_sublayers(num_layers: int) -> list[Sublayer]:
    """What may be skipped: the attention and MLP of every layer but the first and the last (SWIFT keeps both)."""
    return [(kind, i) for kind in KINDS for i in range(1, num_layers - 1)]


def parse_sublayers(names: list[str], num_layers: int) -> frozenset[Sublayer]:
    """``["attn.3", "mlp.5"]`` as sublayers, refusing names outside ``candidate_sublayers``."""
    allowed = {f"{k}.{i}" for k, i in candidate_sublayers(num_layers)}
    bad = [n for n in names if n not in allowed]
    if bad:
        raise ValueError(
            f"token_speculation.skip: {', '.join(bad)} cannot be skipped: name sublayers attn.I or mlp.I with I from "
            f"1 to {num_layers - 2} (the first and last layers always run)"
        )
    return frozenset((n.split(".")[0], int(n.split(".")[1])) for n in names)


def names(skipped) -> list[str]:
    return sorted(f"{k}.{i}" for k, i in skipped)


class LayerSetSearch:
    """SWIFT's proposals: random sets of ``size`` of ``candidates``, every ``BAYES_EVERY``-th by GP-UCB over the
    (set, matchness) pairs observed so far."""

    def __init__(self, candidates: list[Sublayer], size: int, seed: int):
        self.candidates, self.size = candidates, size
        self.rng = np.random.default_rng(seed)
        self.seen: list[np.ndarray] = []  # 0/1 vectors over candidates
        self.scores: list[float] = []
        self.proposals = 0

    def vector(self, skipped) -> np.ndarray:
        return np.array([c in skipped for c in self.candidates], dtype=float)

    def observe(self, skipped, score: float) -> None:
        self.seen.append(self.vector(skipped))
        self.scores.append(score)

    def propose(self, current) -> frozenset[Sublayer]:
        self.proposals += 1
        if self.proposals % BAYES_EVERY == 0 and len(self.seen) >= 2:
            return self._bayes(current)
        return self._random()

    def _random(self) -> frozenset[Sublayer]:
        pick = self.rng.choice(len(self.candidates), self.size, replace=False)
        return frozenset(self.candidates[i] for i in pick)

    def _bayes(self, current) -> frozenset[Sublayer]:
        """The set of the right size with the highest upper confidence bound under a GP on what was observed:
        among random sets and every one-swap neighbour of ``current``."""
        pool = [self.vector(self._random()) for _ in range(256)]
        base = self.vector(current)
        on, off = np.flatnonzero(base), np.flatnonzero(base == 0)
        for i in on:
            for j in off:
                x = base.copy()
                x[i], x[j] = 0.0, 1.0
                pool.append(x)
        X, Z = np.stack(self.seen), np.stack(pool)
        y = np.array(self.scores)
        kernel = lambda a, b: np.exp(-np.abs(a[:, None, :] - b[None, :, :]).sum(-1) / self.size)  # noqa: E731
        K = kernel(X, X) + NOISE * np.eye(len(X))
        Ks = kernel(Z, X)
        mean = y.mean()
        solve = np.linalg.solve(K, np.concatenate([(y - mean)[:, None], Ks.T], axis=1))
        mu = mean + Ks @ solve[:, 0]
        var = np.clip(1.0 - np.einsum("ij,ji->i", Ks, solve[:, 1:]), 1e-12, None)
        best = Z[int(np.argmax(mu + KAPPA * np.sqrt(var)))]
        return frozenset(c for c, v in zip(self.candidates, best) if v)


class Swift(Drafter):
    name = "swift"

    def __init__(
        self,
        model,
        num_tokens: int = 6,
        skip_ratio: float = 0.45,
        search_budget: int = 1000,
        stop_confidence: float = 0.8,
        context_window: int = 32,
        skip: list[str] | None = None,
        seed: int = 0,
        stats=None,
    ):
        check_layout(model)
        self.model, self.stats = model, stats
        self.device = next(model.parameters()).device
        layers = model.config.num_hidden_layers
        self.candidates = candidate_sublayers(layers)
        size = int(len(self.candidates) * skip_ratio)
        if size < 1:
            raise ValueError(
                f"token_speculation.skip_ratio {skip_ratio} skips no sublayer of a {layers}-layer model "
                f"({len(self.candidates)} can be skipped): raise it to at least {1 / max(len(self.candidates), 1):.2f}"
            )
        self.num_tokens, self.stop_confidence, self.window = num_tokens, stop_confidence, context_window
        self.search = LayerSetSearch(self.candidates, size, seed)
        # the starting set: the given one, or SWIFT's every other layer (search_budget: 0 keeps it for good)
        self.skipped = parse_sublayers(skip, layers) if skip else self._alternate(size)
        self.budget, self.patience = search_budget, max(1, search_budget // 3)
        self.steps = self.stale = 0
        self.searching = search_budget > 0
        self.generator = torch.Generator(self.device).manual_seed(seed)

    def _alternate(self, size: int) -> frozenset[Sublayer]:
        """SWIFT's initial set, odd layers first (attention and MLP of layers 1, 3, 5, ...), cut to ``size``."""
        order = sorted(self.candidates, key=lambda c: (c[1] % 2 == 0, c[1], KINDS.index(c[0])))
        return frozenset(order[:size])

    def begin(self, seqs, temperature, top_p):
        self.temperature, self.top_p = temperature, top_p
        self.prompt_lengths = [len(s) for s in seqs]

    def select_rows(self, keep, finished):
        self.prompt_lengths = [self.prompt_lengths[r] for r in keep]

    def _charge(self, forwards: int, kind: str) -> None:
        if self.stats is None:
            return
        if kind == "draft":
            self.stats.role("drafter").forward_passes += forwards
            self.stats.count(
                "token_spec.draft_sublayers", forwards * (2 * len(self.model.model.layers) - len(self.skipped))
            )
        else:
            self.stats.count("token_spec.search_forwards", forwards)

    @torch.inference_mode()
    def matchness(self, seqs: list[list[int]], skipped, window: int) -> float:
        """The fraction of the target's tokens the model without ``skipped`` predicts (argmax), teacher-forced in one
        forward over each row's last ``window`` committed tokens, with the full model's KV of what precedes them."""
        cache = self.target_cache
        B = len(seqs)
        lengths = cache.lengths  # committed tokens per row: the sequence minus its root
        ids = torch.tensor([s[-1 - window : -1] for s in seqs], device=self.device)
        targets = torch.tensor([s[len(s) - window :] for s in seqs], device=self.device)
        start = lengths - window  # sequence index of each row's first window token
        index = cache.valid.long().cumsum(-1) - 1  # sequence index of each committed column
        before = cache.valid & (index < start[:, None])  # committed columns that precede the window
        causal = torch.ones((window, window), dtype=torch.bool, device=self.device).tril()
        visible = torch.cat([before[:, None, :].expand(B, window, -1), causal.expand(B, -1, -1)], dim=-1)
        positions = start[:, None] + torch.arange(window, device=self.device)
        logits = skipped_forward(self.model, skipped, ids, positions, visible, DraftKV(cache.cache))
        self._charge(1, "search")
        return float((logits.argmax(-1) == targets).float().mean())

    def _search_step(self, seqs) -> None:
        """One optimization step: score a proposed set against the current one on the same recent tokens; keep the
        better; stop when the budget, the patience or the score says so."""
        proposal = self.search.propose(self.skipped)
        current = self.matchness(seqs, self.skipped, self.window)
        score = self.matchness(seqs, proposal, self.window) if proposal != self.skipped else current
        self.search.observe(self.skipped, current)
        self.search.observe(proposal, score)
        self.steps += 1
        if score > current:
            self.skipped, self.stale = proposal, 0
        else:
            self.stale += 1
        best = max(score, current)
        if self.steps >= self.budget or self.stale >= self.patience or best >= ENOUGH:
            self.searching = False
            log.info("SWIFT: skipping %s after %d search steps (matchness %.3f)", names(self.skipped), self.steps, best)
        if self.stats is not None:
            self.stats.count("token_spec.search_steps")

    @torch.inference_mode()
    def draft(self, seqs):
        cache, B = self.target_cache, len(seqs)
        self.drafted = True
        if self.searching and min(len(s) - p for s, p in zip(seqs, self.prompt_lengths)) >= self.window:
            self._search_step(seqs)
        sampling = self.temperature > 0
        trees = [DraftTree(dists={} if sampling else None) for _ in range(B)]
        kv = DraftKV(cache.cache)
        ids = torch.tensor([[s[-1]] for s in seqs], device=self.device)
        drafting = np.ones(B, dtype=bool)
        last = [-1] * B
        forwards = 0
        for step in range(min(self.num_tokens, self.limit or self.num_tokens)):
            # the new token sees the committed columns and the chain drafted so far (every own column)
            visible = torch.cat(
                [cache.valid[:, None, :], torch.ones((B, 1, step + 1), dtype=torch.bool, device=self.device)], dim=-1
            )
            logits = skipped_forward(self.model, self.skipped, ids, cache.lengths[:, None] + step, visible, kv)[:, -1]
            forwards += 1
            probs = torch.softmax(logits, dim=-1)
            if sampling:
                q = sampling_probs(logits, self.temperature, self.top_p)
                tokens = torch.multinomial(q, 1, generator=self.generator)[:, 0]
            else:
                tokens = logits.argmax(-1)
            confidence = probs.gather(-1, tokens[:, None])[:, 0].tolist()
            for b, token in enumerate(tokens.tolist()):
                if not drafting[b]:
                    continue
                if sampling:
                    trees[b].dists[last[b]] = q[b]
                last[b] = trees[b].add(token, last[b])
                drafting[b] = confidence[b] >= self.stop_confidence  # SWIFT: keep the token, stop after it
            if not drafting.any():
                break
            ids = tokens[:, None]
        self._charge(forwards, "draft")
        return trees

    def update(self, seqs, verdicts):
        self.drafted = False
