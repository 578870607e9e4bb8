"""Arbitrage's router: predict, from the context and the draft's step alone, whether the target would write a
meaningfully better step; escalate to the target when it would.

The router is trained by ``evals/router_train.py`` (``reasoner router collect`` / ``reasoner router train``):

1. ``collect``: along the target's own greedy trajectory of each problem (Arbitrage's ``generate`` mode), the draft
   and the target each write the next step from the same prefix. Each step gets a reward: exact correctness when
   the suite knows the reference steps (the toy world: a step is right iff it equals the reference step after a
   reference prefix; a problem stops being collected once the target leaves the reference), else the recipe's
   verifier (a PRM). The oracle label is ``reward(target) - reward(draft) > margin`` (the target is meaningfully
   better). Each row stores the router's features of the draft step.
2. ``train``: a scikit-learn classifier on the features, held-out ROC-AUC against the oracle label (split by
   problem, so no problem is in both halves).

Deviation from Arbitrage: its router is a fine-tuned PRM-sized transformer reading the text; ours is a small
logistic regression on cheap features (the draft's token log-probs, the target's teacher-forced log-probs of the
draft step from one prefill, the step's length, depth, and whether it states the answer), which trains in seconds
on a CPU and is saved as plain JSON (weights, no pickle). ``toy:router`` is the one trained for the toy models.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from reasoner.core.types import Node
from reasoner.toy import MODELS_DIR

from .likelihood import prompt_ids, step_token_ids

TOY_ROUTER = MODELS_DIR / "router.json"

FEATURES = (
    "draft_mean_logprob",
    "draft_min_logprob",
    "draft_first_logprob",
    "target_mean_logprob",
    "target_min_logprob",
    "target_first_logprob",
    "step_tokens",
    "depth",
    "states_answer",
)


def features(children: Sequence[Node], target, template) -> list[list[float]]:
    """The router's features of each child's (draft) step; one batched target prefill scores all of them, on the
    token ids the path was generated as (the prefix the target's own engine continues from, so it hits its prefix
    cache) followed by the step's generated ids."""
    prompts = [prompt_ids(target, template, c.parent) for c in children]
    continuations = [step_token_ids(target, template, c.step) for c in children]
    scored = target.score(prompts, continuations)
    rows = []
    for child, tlp, usage in zip(children, scored, scored.usage):
        child.tree.stats.book(target.role, usage)
        dlp = child.step.logprobs or [0.0]
        tlp = tlp or [0.0]
        rows.append(
            [
                sum(dlp) / len(dlp),
                min(dlp),
                dlp[0],
                sum(tlp) / len(tlp),
                min(tlp),
                tlp[0],
                float(len(child.step.token_ids)),
                float(child.depth),
                float("\\boxed" in child.step.text),
            ]
        )
    return rows


class Router:
    """A trained router (a logistic regression over ``FEATURES``) bound to the target that computes its features."""

    def __init__(self, weights: dict, target, template):
        self.weights, self.target, self.template = weights, target, template

    def predict(self, children: Sequence[Node]) -> list[float]:
        """P(the target would write a meaningfully better step) for each child's draft step."""
        return [self.probability(x) for x in features(children, self.target, self.template)] if children else []

    def probability(self, x: Sequence[float]) -> float:
        w = self.weights
        z = w["intercept"] + sum(c * (v - m) / s for c, v, m, s in zip(w["coef"], x, w["mean"], w["scale"]))
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    @classmethod
    def load(cls, path: str | Path, target, template) -> Router:
        path = Path(TOY_ROUTER if str(path) == "toy:router" else path).expanduser()
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
        if not isinstance(weights, dict) or weights.get("features") != list(FEATURES):
            raise ValueError(
                f"{path} is not a router for these features ({', '.join(FEATURES)}); retrain it with `reasoner "
                "router train`"
            )
        return cls(weights, target, template)
