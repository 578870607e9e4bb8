"""Verification: every row's draft tree in one target forward, then the lossless acceptance walk.

The forward (gpt-fast style, through a stock transformers model): the input is the row's last token (the root,
not yet in the cache) followed by its tree nodes; a 4-D mask lets each node see the cached prefix, its ancestors
and itself; position ids are prefix length + depth. Afterwards the KV of the root and the accepted path is kept,
everything else dropped (``RaggedCache.commit``), so nothing is recomputed.

The walk starts at the root and moves to an accepted child until none is accepted; the target then supplies one
more token itself (the bonus). Rules:
- greedy: the child equal to the target's argmax (SpecInfer VerifyGreedy);
- deterministic drafts, sampling: try distinct children in order, accept x with probability p(x), else set
  p(x) = 0 and renormalise; if none is accepted, sample from what is left (EAGLE-2; MSS with point-mass drafts);
- drafts with probabilities, sampling: multi-step speculative sampling (SpecInfer MSS): accept x with probability
  min(1, p(x)/q(x)), else p <- norm(max(0, p - q)); siblings were drawn without replacement, so q also drops x
  and is renormalised (Sequoia / recursive speculative decoding: recursive rejection sampling). If none is
  accepted, sample from p.
- sampling, ``traversal=True``: traversal verification (Weng et al. 2025, "Traversal Verification for Speculative
  Tree Decoding"), leaf to root with sequence-level acceptance (``walk_traversal``).
- ``judge``: Judge Decoding (``judge.JudgeHead``, lossy): a token the rule rejects is still accepted when a linear
  head on the target's hidden state at that token judges it correct.
Each rule leaves the distribution of emitted tokens equal to the target's (``tests/test_specdec_sampling.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .cache import RaggedCache
from .tree import DraftTree


def sampling_probs(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """The distribution plain decoding samples from: softmax at ``temperature``, then the top-p nucleus."""
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        drop = sorted_probs.cumsum(-1) - sorted_probs > top_p  # keep the smallest set reaching top_p
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


@dataclass
class Verdict:
    """One row's outcome: accepted tree nodes (a root-to-node path), the emitted tokens (their tokens plus the
    bonus), the target's raw log-probability of each emitted token, and the tree and logits (drafters learn from
    them)."""

    path: list[int]
    tokens: list[int]
    logprobs: list[float]
    tree: DraftTree
    logits: torch.Tensor  # [1 + len(tree), V]: row 0 is the root's next-token logits, row i + 1 node i's
    judged: list[int] = field(default_factory=list)  # positions in ``path`` accepted by the judge alone (lossy)


def tree_inputs(roots: list[int], trees: list[DraftTree], device, pad_id: int = 0):
    """Batched forward inputs: ids [B, Q], depth [B, Q], and who sees whom among the Q new tokens [B, Q, Q].
    Padding nodes see only themselves (no fully masked row) and are never kept."""
    B, Q = len(trees), 1 + max(len(t) for t in trees)
    ids = np.full((B, Q), pad_id, dtype=np.int64)
    depth = np.zeros((B, Q), dtype=np.int64)
    sees = np.repeat(np.eye(Q, dtype=bool)[None], B, axis=0)
    for b, (root, tree) in enumerate(zip(roots, trees)):
        ids[b, 0] = root
        n = len(tree)
        if n:
            ids[b, 1 : n + 1] = tree.tokens
            depth[b, 1 : n + 1] = tree.depths()
            row = sees[b]
            for i, p in enumerate(tree.parents):  # node i sees what its parent sees, and itself
                row[i + 1] |= row[p + 1]
    return torch.from_numpy(ids).to(device), torch.from_numpy(depth).to(device), torch.from_numpy(sees).to(device)


def verify(
    cache: RaggedCache,
    roots: list[int],
    trees: list[DraftTree],
    temperature: float,
    top_p: float,
    generator,
    pad_id: int = 0,
    traversal: bool = False,
    judge=None,
) -> list[Verdict]:
    """One target forward over every row's root and tree; commit the accepted paths to ``cache``. ``traversal``:
    sampled trees are verified leaf to root (``walk_traversal``) instead of token by token from the root.
    ``judge``: a ``judge.JudgeHead`` that also accepts tokens it judges correct (Judge Decoding, lossy)."""
    ids, depth, sees = tree_inputs(roots, trees, cache.device, pad_id)
    if judge is not None:
        with judge.capture(cache.model) as box:
            logits = cache.forward(ids, depth, sees)
        return _judged(
            cache, trees, logits, judge.accepts(box["hidden"]).tolist(), temperature, top_p, generator, judge
        )
    logits = cache.forward(ids, depth, sees)
    if temperature == 0:
        best = logits.argmax(-1).tolist()
    else:
        probs = sampling_probs(logits, temperature, top_p)
    sampled = walk_traversal if traversal else walk_sampling
    walks = [
        walk_greedy(tree, best[b]) if temperature == 0 else sampled(tree, probs[b], generator)
        for b, tree in enumerate(trees)
    ]
    return _verdicts(cache, trees, logits, walks)


def _judged(cache, trees, logits, ok, temperature, top_p, generator, judge) -> list[Verdict]:
    """``verify`` with the judge's verdicts ``ok`` [B][Q] (column i + 1: node i)."""
    if temperature == 0:
        best = logits.argmax(-1).tolist()
        walks = [judge.walk_greedy(tree, best[b], ok[b]) for b, tree in enumerate(trees)]
    else:
        probs = sampling_probs(logits, temperature, top_p)
        walks = [judge.walk_sampling(tree, probs[b], ok[b], generator) for b, tree in enumerate(trees)]
    verdicts = _verdicts(cache, trees, logits, [(path, bonus) for path, bonus, _ in walks])
    for v, (_, _, judged) in zip(verdicts, walks):
        v.judged = judged
    return verdicts


def _verdicts(cache, trees, logits, walks) -> list[Verdict]:
    """Each row's ``(path, bonus)`` as a Verdict with the emitted tokens' log-probabilities; commits the paths."""
    verdicts = []
    # the raw log-probability of every emitted token, gathered at once: (row, position of its parent, token)
    keep = [[0] + [i + 1 for i in path] for path, _ in walks]
    tokens = [[tree.tokens[i] for i in path] + [bonus] for tree, (path, bonus) in zip(trees, walks)]
    flat = torch.tensor(
        [(b, c, t) for b, (cols, toks) in enumerate(zip(keep, tokens)) for c, t in zip(cols, toks)],
        device=logits.device,
    )
    lps = (logits[flat[:, 0], flat[:, 1], flat[:, 2]] - logits[flat[:, 0], flat[:, 1]].logsumexp(-1)).tolist()
    start = 0
    for b, (tree, (path, _)) in enumerate(zip(trees, walks)):
        n = len(tokens[b])
        verdicts.append(Verdict(path, tokens[b], lps[start : start + n], tree, logits[b, : len(tree) + 1]))
        start += n
    cache.commit(keep)
    return verdicts


def walk_greedy(tree: DraftTree, argmax: list[int]) -> tuple[list[int], int]:
    kids, path, node = tree.children(), [], -1
    while True:
        target = argmax[node + 1]
        node = next((c for c in kids[node + 1] if tree.tokens[c] == target), None)
        if node is None:
            return path, target
        path.append(node)


def _draft_dist(tree: DraftTree, node: int, like: torch.Tensor) -> torch.Tensor | None:
    """The distribution ``node``'s children were drawn from, as a dense vector like ``like``; ``None`` when they are
    deterministic (point masses: no ``dists``, or none for this node)."""
    q = None if tree.dists is None else tree.dists.get(node)
    if q is None:
        return None
    if isinstance(q, dict):  # sparse draft distribution
        index = torch.tensor(list(q), device=like.device)
        q = torch.zeros_like(like).index_put_(
            (index,), torch.tensor(list(q.values()), dtype=like.dtype, device=like.device)
        )
    return q


def walk_sampling(tree: DraftTree, probs: torch.Tensor, generator) -> tuple[list[int], int]:
    kids, path, node = tree.children(), [], -1
    while True:
        children = [(c, tree.tokens[c]) for c in kids[node + 1]]
        q = _draft_dist(tree, node, probs[0]) if children else None
        if q is not None:
            token, child = multi_step_rule(probs[node + 1], q, children, generator)
        else:
            token, child = point_mass_rule(probs[node + 1], children, generator)
        if child is None:
            return path, token
        path.append(child)
        node = child


def _uniform(generator) -> float:
    return float(torch.rand((), generator=generator, device=generator.device))


def _sample(p: torch.Tensor, generator) -> int:
    return int(torch.multinomial(p, 1, generator=generator))


def point_mass_rule(p: torch.Tensor, children, generator) -> tuple[int, int | None]:
    """Deterministic drafts: accept child token x with probability p(x), else remove x from p."""
    p = p.clone()
    for child, x in children:
        px = float(p[x])
        if _uniform(generator) < px:
            return x, child
        _drop_point(p, x, px)
    return _sample(p, generator), None


def _drop_point(p: torch.Tensor, x: int, px: float) -> None:
    """A rejected point-mass draft x: remove it from p (in place) and renormalise."""
    p[x] = 0.0
    p /= 1.0 - px if px < 1.0 else 1.0


def multi_step_rule(p: torch.Tensor, q: torch.Tensor, children, generator) -> tuple[int, int | None]:
    """Drafts sampled from q without replacement: accept x with probability min(1, p(x)/q(x)), else move p to the
    residual norm(max(0, p - q)) and q to q without x."""
    p, q = p.clone(), q.clone()
    for child, x in children:
        px, qx = float(p[x]), float(q[x])
        if _uniform(generator) * qx < px:
            return x, child
        p, q = _drop_sampled(p, q, x)
        if q is None:
            break
    return _sample(p, generator), None


def _drop_sampled(p: torch.Tensor, q: torch.Tensor, x: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A rejected draft x drawn from q: p moves to the residual norm(max(0, p - q)), q drops x (in place) and is
    renormalised; q is None once nothing is left in it."""
    residual = (p - q).clamp_(min=0)
    total = float(residual.sum())
    if total > 0:
        p = residual / total
    q[x] = 0.0
    rest = float(q.sum())
    if rest <= 0:
        return p, None
    return p, q.div_(rest)


def walk_traversal(tree: DraftTree, probs: torch.Tensor, generator) -> tuple[list[int], int]:
    """Traversal verification (Weng et al. 2025): the tree is visited depth first and each node is decided after
    its subtree, leaf to root, with the acceptance of the whole path from the root (sequence level) instead of
    each token's own ratio, so a child the token-level rule would reject with its parent can carry the parent.

    A node carries a weight w (the root 1): its subtree emits a continuation y with probability w * p(y) and
    passes the decision up to its parent with probability 1 - w. A child x drawn from the node's draft q gets
    weight min(1, w p(x) / q(x)); when its subtree passes up, the node moves to the residual m = max(0, w p - q)
    (mass r), its weight to r / (r + 1 - w), and q drops x (children are drawn without replacement); with no
    child left the node is accepted with probability w and the bonus token drawn from its p. Point-mass drafts are
    q = the child's token. On a chain this is block verification (Sun et al. 2024); every step keeps the
    invariant above, so what is emitted follows the target exactly (``tests/test_specdec_sampling.py``).
    Deviations: the rule is written from that invariant (the paper's pseudo-code was not at hand), so its
    bookkeeping may differ from the paper's while the distribution is the target's either way; the traversal is a
    Python recursion over the row's tree, not a batched GPU kernel."""
    kids = tree.children()

    def visit(node: int, w: float) -> tuple[list[int], int] | None:
        p = probs[node + 1]
        children = kids[node + 1]
        q = _draft_dist(tree, node, p) if children else None
        q = None if q is None else q.clone()
        for child in children:
            x = tree.tokens[child]
            qx = 1.0 if q is None else float(q[x])
            if qx <= 0:  # drawn from q, so never; kept for safety: such a child says nothing about p
                continue
            found = visit(child, min(1.0, w * float(p[x]) / qx))
            if found is not None:
                return [child] + found[0], found[1]
            if q is None:  # point mass at x: the residual is w p without x
                m = w * p
                m[x] = 0.0
            else:
                m = (w * p - q).clamp_(min=0)
                q[x] = 0.0
                rest = float(q.sum())
                if rest > 0:
                    q /= rest
            r = float(m.sum())
            if r <= 0:
                w = 0.0
                break
            w, p = r / (r + 1.0 - w), m / r
        if node < 0 or _uniform(generator) < w:  # the root always emits (its weight stays 1)
            return [], _sample(p, generator)
        return None

    return visit(-1, 1.0)
