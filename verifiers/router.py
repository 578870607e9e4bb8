"""Arbitrage's router: predict, before the target is asked, whether the target would write a meaningfully better
step than the draft's; escalate to the target when it would ("Arbitrage: Efficient Reasoning via Advantage-Aware
Speculation", 2025).

Two routers, named for what they read (the acceptor a recipe names must match its file):

- ``router`` (the paper's cost profile): features from the draft's side only: the last-layer hidden state of the
  step's last token in the draft model that wrote it, the draft's token log-probs over the step (mean, min,
  first), the step's length, its position (depth) and whether it states the answer. The target runs only on the
  steps the router escalates; an accepted step never costs a target forward.
- ``target_router``: the same scalar features plus the target's teacher-forced log-probs of the draft step (mean,
  min, first), from one target prefill per step. It is a learned likelihood acceptor: every decision costs that
  prefill, accepted steps included.

Both are trained by ``evals/router_train.py`` (``reasoner router collect`` / ``reasoner router train``):

1. ``collect``: along the target's own greedy trajectory of each problem (Arbitrage's ``generate`` mode), the draft
   and the target each write the next step from the same prefix. Each step gets a reward: exact correctness when
   the suite knows the reference steps (the toy world: a step is right iff it equals the reference step after a
   reference prefix; a problem stops being collected once the target leaves the reference), else the recipe's
   verifier (a PRM). The oracle label is ``reward(target) - reward(draft) > margin`` (the target is meaningfully
   better, the paper's advantage label). Each row stores both routers' features of the draft step.
2. ``train``: a logistic regression or a one-hidden-layer MLP on one router's features, with the held-out ROC-AUC
   against the oracle label (split by problem, so no problem is in both halves).

Deviations from Arbitrage: its router is a fine-tuned PRM-sized transformer reading the text; ours is a small head
on the draft's own hidden state and log-probs, saved as plain JSON (weights, no pickle), which trains in seconds on
a CPU. The hidden state costs one extra draft forward per step (our decoding loop keeps no hidden states; with the
prefix cache it runs one token). ``toy:router`` and ``toy:target_router`` are the ones trained for the toy models.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from reasoner.core.types import Node
from reasoner.toy import MODELS_DIR

from .likelihood import prompt_ids, step_token_ids

TOY_ROUTERS = {"toy:router": MODELS_DIR / "router.json", "toy:target_router": MODELS_DIR / "target_router.json"}

STEP_FEATURES = (
    "draft_mean_logprob",
    "draft_min_logprob",
    "draft_first_logprob",
    "step_tokens",
    "depth",
    "states_answer",
)
TARGET_LOGPROBS = ("target_mean_logprob", "target_min_logprob", "target_first_logprob")
# the scalar features each router reads; ``router`` also reads the draft's hidden state (``hidden_size`` numbers)
FEATURES = {"router": STEP_FEATURES, "target_router": STEP_FEATURES + TARGET_LOGPROBS}


def _logprob_stats(lps: Sequence[float]) -> tuple[float, float, float]:
    lps = list(lps) or [0.0]
    return sum(lps) / len(lps), min(lps), lps[0]


def step_features(children: Sequence[Node]) -> list[dict[str, float]]:
    """What the draft's generation already gave: its log-probs of the step, the step's length and depth."""
    rows = []
    for child in children:
        mean, low, first = _logprob_stats(child.step.logprobs)
        rows.append(
            {
                "draft_mean_logprob": mean,
                "draft_min_logprob": low,
                "draft_first_logprob": first,
                "step_tokens": float(len(child.step.token_ids)),
                "depth": float(child.depth),
                "states_answer": float("\\boxed" in child.step.text),
            }
        )
    return rows


def target_logprobs(children: Sequence[Node], target, template) -> list[dict[str, float]]:
    """The target's teacher-forced log-probs of each child's step; one batched target prefill scores all of them, on
    the token ids the path was generated as (so it hits the target's prefix cache), booked under the target."""
    prompts = [prompt_ids(target, template, c.parent) for c in children]
    scored = target.score(prompts, [step_token_ids(target, template, c.step) for c in children])
    rows = []
    for child, lps, usage in zip(children, scored, scored.usage):
        child.tree.stats.book(target.role, usage)
        rows.append(dict(zip(TARGET_LOGPROBS, _logprob_stats(lps))))
    return rows


def draft_hidden(children: Sequence[Node], draft, template) -> list[list[float]]:
    """The draft's last-layer hidden state at each step's last token (the delimiter it ended the step with), from
    one batched draft forward, booked under the draft."""
    prompts = [prompt_ids(draft, template, c.parent) for c in children]
    out = draft.hidden_states(prompts, [step_token_ids(draft, template, c.step) for c in children])
    for child, usage in zip(children, out.usage):
        child.tree.stats.book(draft.role, usage)
    return list(out)


class Router:
    """A trained router: a head (logistic regression, or an MLP with ReLU hidden layers) over standardised
    features. ``kind`` is ``router`` (draft-side; ``lm`` is the draft) or ``target_router`` (``lm`` is the
    target)."""

    def __init__(self, weights: dict, lm, template):
        self.weights, self.lm, self.template = weights, lm, template
        self.kind = weights["acceptor"]

    def features(self, children: Sequence[Node]) -> list[list[float]]:
        """Each child's feature vector, in the order the head was trained on."""
        rows = step_features(children)
        if self.kind == "target_router":
            rows = [a | b for a, b in zip(rows, target_logprobs(children, self.lm, self.template))]
        hidden = [[] for _ in children]
        if self.weights["hidden_size"]:
            hidden = draft_hidden(children, self.lm, self.template)
        return [vector(self.weights, r, h) for r, h in zip(rows, hidden)]

    def predict(self, children: Sequence[Node]) -> list[float]:
        """P(the target would write a meaningfully better step) for each child's draft step."""
        return [self.probability(x) for x in self.features(children)] if children else []

    def probability(self, x: Sequence[float]) -> float:
        w = self.weights
        h = [(v - m) / s for v, m, s in zip(x, w["mean"], w["scale"])]
        for i, layer in enumerate(w["layers"]):
            h = [b + sum(a * c for a, c in zip(h, col)) for b, col in zip(layer["b"], layer["w"])]
            if i < len(w["layers"]) - 1:
                h = [max(0.0, v) for v in h]
        z = h[0]
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    @classmethod
    def load(cls, path: str | Path, kind: str, lm, template) -> Router:
        """The router file ``path`` (``toy:router``, ``toy:target_router`` or a file) for the acceptor ``kind``."""
        path = Path(TOY_ROUTERS.get(str(path), path)).expanduser()
        try:
            weights = json.loads(path.read_text())
        except OSError as e:
            raise ValueError(
                f"cannot read router {path}: {e.strerror}; train one with `reasoner router train`"
            ) from None
        except json.JSONDecodeError:
            raise ValueError(
                f"{path} is not a router file (not JSON); train one with `reasoner router train`"
            ) from None
        if not isinstance(weights, dict) or weights.get("acceptor") not in FEATURES:
            raise ValueError(f"{path} is not a router file; retrain it with `reasoner router train`")
        if weights["acceptor"] != kind:
            raise ValueError(
                f"{path} is a {weights['acceptor']} file, not a {kind}: set step_speculation.acceptor="
                f"{weights['acceptor']}, or train a {kind} with `reasoner router train --acceptor {kind}`"
            )
        if weights.get("features") != list(FEATURES[kind]):
            raise ValueError(
                f"{path} is not a {kind} for these features ({', '.join(FEATURES[kind])}); retrain it with "
                f"`reasoner router train --acceptor {kind}`"
            )
        return cls(weights, lm, template)


def vector(weights: dict, scalars: dict[str, float], hidden: Sequence[float]) -> list[float]:
    """A router's input: its scalar features in its order, then the draft's hidden state (``hidden_size`` numbers;
    a model other than the one it was trained with fails here, by name)."""
    size = weights["hidden_size"]
    if len(hidden) != size:
        raise ValueError(
            f"the router was trained on a draft with hidden size {size}, this draft's is {len(hidden)}: train a "
            "router for this draft with `reasoner router collect` / `reasoner router train`"
        )
    return [scalars[f] for f in weights["features"]] + list(hidden)
