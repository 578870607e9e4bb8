"""Judge Decoding (Bachmann et al., ICLR 2025, "Judge Decoding: Faster Speculative Sampling Requires Going Beyond
Model Alignment"): a linear head on the target's last hidden state that accepts a drafted token the target would
not have produced when it judges the token correct in context. Lossy by design: report accuracy beside speed.

Standard verification throws away a correct draft token whenever it is not the target's own choice (another
digit order, another wording). The paper observes that the target's embedding of the drafted token (its last
hidden state at the token's position, computed by the verifying forward anyway) already says whether the token is
an error, and trains a logistic-regression "judge" on it. Verification then accepts the longest path of drafted
tokens where each token is accepted by the standard rule *or* by the judge (probability at least ``threshold``);
the target adds its bonus token after the last accepted one as usual.

Here (``verify.verify(..., judge=...)``):
- the hidden state of tree node i is the input of the target's output embedding at the node's own column of the
  verifying forward (caught by a forward pre-hook: no extra forward, any ``*ForCausalLM``);
- greedy: at each node the child equal to the target's argmax is taken first; if there is none, the first child
  (in the drafter's order) the judge accepts; sampled: each child gets the standard rule first (point-mass or
  multi-step speculative sampling), and a child it rejects is still taken if the judge accepts it; traversal
  verification is not combined with the judge;
- ``Verdict.judged`` lists the path positions accepted by the judge alone; the decoding loop counts them in
  ``Stats`` (``token_spec.judge_accepted``, and ``token_spec.rule_accepted`` for the standard rule's).
The head file (JSON): ``hidden_size``, ``mean``/``scale`` (standardisation), ``w``, ``b``; ``evals/judge_train.py``
writes it (``reasoner judge train``).

Deviations: the paper trains its judge (about 16k parameters) on about 30k tokens of a curated dataset of correct
and incorrect continuations for 8B/70B drafts and a 405B target; here the labels come from the toy world: a
drafted token that differs from the target's greedy choice is labelled correct when accepting it and continuing
greedily with the target still reaches the right final answer (``evals/judge_train.py``). How the judge combines
with speculative sampling here (the judge only after the standard rule rejects, so a judge that never fires keeps
the sampled output identical) is our choice. The paper notes small draft/target pairs gain less; on the toy pair
the draft already agrees with the target on nearly every token (``docs/benchmarks.md``).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch

from .tree import DraftTree
from .verify import _draft_dist, _drop_point, _drop_sampled, _sample, _uniform

TOY_JUDGE = Path(__file__).parents[1] / "toy" / "models" / "judge.json"


class JudgeHead:
    """P(draft token acceptable) = sigmoid(w . (h - mean) / scale + b) on the target's last hidden state h."""

    def __init__(self, weights: dict, threshold: float = 0.5, name: str = "judge"):
        try:
            self.hidden_size = int(weights["hidden_size"])
            self.w = torch.tensor(weights["w"], dtype=torch.float32)
            self.b = float(weights["b"])
            self.mean = torch.tensor(weights.get("mean", [0.0] * self.hidden_size), dtype=torch.float32)
            self.scale = torch.tensor(weights.get("scale", [1.0] * self.hidden_size), dtype=torch.float32)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f"{name} is not a judge head ({type(e).__name__}: {e}); write one with `reasoner judge train`"
            ) from None
        if not self.w.shape == self.mean.shape == self.scale.shape == (self.hidden_size,):
            raise ValueError(f"{name}: w, mean and scale must each hold hidden_size={self.hidden_size} numbers")
        self.threshold = threshold
        self.info = weights.get("info", {})

    def probabilities(self, hidden: torch.Tensor) -> torch.Tensor:
        """P(acceptable) for hidden states [..., H]."""
        h = hidden.float()
        w, mean, scale = (t.to(h.device) for t in (self.w, self.mean, self.scale))
        return torch.sigmoid(((h - mean) / scale) @ w + self.b)

    def accepts(self, hidden: torch.Tensor) -> torch.Tensor:
        """Boolean [...]: the judge accepts (probability at least ``threshold``; above 1 it never does)."""
        return self.probabilities(hidden) >= self.threshold

    @contextmanager
    def capture(self, model):
        """Within the block, ``box["hidden"]`` is the last hidden state [B, Q, H] of ``model``'s latest forward
        (the input of its output embedding)."""
        box: dict = {}
        head = model.get_output_embeddings()
        if head.in_features != self.hidden_size:
            raise ValueError(
                f"the judge head reads hidden states of size {self.hidden_size}, the target's are {head.in_features}: "
                "train a judge for this target with `reasoner judge train`"
            )
        handle = head.register_forward_pre_hook(lambda _, args: box.__setitem__("hidden", args[0]))
        try:
            yield box
        finally:
            handle.remove()

    # -- walks: like ``verify``'s, plus the judge; each returns (path, bonus token, judged path positions) --------

    def walk_greedy(self, tree: DraftTree, argmax: list[int], ok: list[bool]):
        kids, path, judged, node = tree.children(), [], [], -1
        while True:
            target = argmax[node + 1]
            children = kids[node + 1]
            child = next((c for c in children if tree.tokens[c] == target), None)
            if child is None:
                child = next((c for c in children if ok[c + 1]), None)
                if child is None:
                    return path, target, judged
                judged.append(len(path))
            path.append(child)
            node = child

    def walk_sampling(self, tree: DraftTree, probs: torch.Tensor, ok: list[bool], generator):
        kids, path, judged, node = tree.children(), [], [], -1
        while True:
            children = kids[node + 1]
            p = probs[node + 1].clone()
            q = _draft_dist(tree, node, p) if children else None
            q = None if q is None else q.clone()
            chosen = None
            for child in children:
                x = tree.tokens[child]
                px = float(p[x])
                qx = 1.0 if q is None else float(q[x])
                if _uniform(generator) * qx < px:  # the standard rule (point mass: qx = 1)
                    chosen = child
                    break
                if ok[child + 1]:  # rejected by the rule, accepted by the judge
                    chosen = child
                    judged.append(len(path))
                    break
                if q is None:
                    _drop_point(p, x, px)
                    continue
                p, q = _drop_sampled(p, q, x)
                if q is None:
                    break
            if chosen is None:
                return path, _sample(p, generator), judged
            path.append(chosen)
            node = chosen


def load_judge(path: str, threshold: float = 0.5) -> JudgeHead:
    """A judge head file from ``reasoner judge train`` (``toy``: the one shipped for toy:target)."""
    file = TOY_JUDGE if path == "toy" else Path(path)
    try:
        weights = json.loads(file.read_text())
    except OSError as e:
        raise ValueError(
            f"cannot read token_speculation.judge {path!r}: {e.strerror}; write one with `reasoner judge train` or use "
            "toy"
        ) from None
    except json.JSONDecodeError as e:
        raise ValueError(
            f"token_speculation.judge {path!r} is not JSON ({e}); write it with `reasoner judge train`"
        ) from None
    if not isinstance(weights, dict):
        raise ValueError(f"token_speculation.judge {path!r} is not a judge head; write it with `reasoner judge train`")
    return JudgeHead(weights, threshold, f"token_speculation.judge {path!r}")
