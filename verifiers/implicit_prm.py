"""The implicit PRM (Yuan et al. 2024, "Free Process Rewards without Process Labels"): process rewards from a
language model trained on outcome labels only.

A model ``pi_theta`` and a reference ``pi_ref`` (the model ``pi_theta`` was trained from) score a path's tokens;
the outcome reward is parameterised as ``r = beta * log(pi_theta(y) / pi_ref(y))`` and trained with
cross-entropy on whether the whole trajectory's answer is right (``reasoner prm train --objective implicit``).
The paper's process reward then comes for free: ``q_t = sum over the tokens up to step t of beta * log
(pi_theta / pi_ref)`` is the step's Q-value (its Proposition 3.1: the log of the expected exponentiated outcome
reward from there), and ``q_t - q_(t-1)`` the step's own reward.

``reward="value"`` (default) scores a step ``sigmoid(q_t)``: under the CE objective, the probability that a
trajectory through this prefix is right, which is what a step label "the path is right so far" asks.
``reward="step"`` scores ``sigmoid(q_t - q_(t-1))``, the paper's per-step reward (its best-of-N takes the min
over steps of it). Both are in [0, 1] as every verifier's scores. A step's tokens are those it was written as,
with the delimiter (or EOS) that ended it (``likelihood.step_token_ids``); ``pi_theta`` and ``pi_ref`` must share
a tokenizer, as in the paper. Deviation: the paper's ``pi_ref`` is the model ``pi_theta`` started from; here it
may be any model role (``verifier.reference``), e.g. the draft, so an untrained pair (the target over the draft)
is a verifier too; on the toy draft's samples that pair's ``q_t`` ranks steps best (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from prompts import PromptTemplate
from reasoner.backends.sources import resolve_path
from reasoner.core.lm import LM
from reasoner.core.types import Node, Problem, Step, Tree

from .likelihood import step_logprobs

REWARDS = ("value", "step")


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def q_values(policy: Sequence[Sequence[float]], reference: Sequence[Sequence[float]], beta: float) -> list[float]:
    """``q_t`` of every step: ``beta`` times the summed log-ratio of the policy's and reference's token
    log-probabilities over all steps up to ``t`` (the paper's Eq. for q, at step ends)."""
    out, q = [], 0.0
    for mine, ref in zip(policy, reference, strict=True):
        q += beta * (sum(mine) - sum(ref))
        out.append(q)
    return out


def trained_beta(path: str) -> float:
    """The beta an implicit PRM was trained with (``reasoner prm train --objective implicit`` records it in the
    model's config as ``implicit_prm.beta``)."""
    config = Path(resolve_path(path)) / "config.json"
    beta = json.loads(config.read_text()).get("implicit_prm", {}).get("beta") if config.is_file() else None
    if beta is None:
        raise ValueError(
            f"verifier.type=implicit_prm: {path} records no beta (not trained by `reasoner prm train --objective "
            "implicit`?): set verifier.beta to the one it was trained with"
        )
    return float(beta)


def text_paths(problems: Sequence[str], paths: Sequence[Sequence[str]]) -> list[Node]:
    """One tree per (problem, steps), each step a text written to its delimiter, the last one to EOS (a finished
    solution), so a verifier reads steps that only exist as text the way the policy wrote them."""
    nodes = []
    for problem, steps in zip(problems, paths):
        node = Tree(Problem(problem)).root
        for k, text in enumerate(steps):
            last = k == len(steps) - 1
            node = node.add_child(Step(text, finish_reason="eos" if last else "stop"), terminal=last)
        nodes.append(node)
    return nodes


class ImplicitPRMVerifier:
    """Scores steps with an implicit PRM: ``lm`` is ``pi_theta``, ``reference`` is ``pi_ref``; one prefill of each
    per path (``reference`` may be a model the recipe already loads, e.g. the target it was trained from)."""

    def __init__(self, lm: LM, reference: LM, template: PromptTemplate, beta: float, reward: str = "value"):
        if reward not in REWARDS:
            raise ValueError(f"unknown implicit PRM reward {reward!r}: use one of {', '.join(REWARDS)}")
        if not beta > 0:
            raise ValueError(f"implicit PRM: beta must be > 0 (the one it was trained with), got {beta}")
        self.lm, self.reference, self.template, self.beta, self.reward = lm, reference, template, beta, reward
        self.name = f"implicit-prm-{reward}"

    def score_paths(self, nodes: Sequence[Node]) -> list[list[float]]:
        todo = [n for n in nodes if any(self.name not in p.step.scores for p in n.path())]
        mine = step_logprobs(self.lm, self.template, todo)
        ref = step_logprobs(self.reference, self.template, todo)
        for node, a, b in zip(todo, mine, ref):
            q = q_values(a, b, self.beta)
            rewards = q if self.reward == "value" else [x - y for x, y in zip(q, [0.0, *q[:-1]])]
            for p, r in zip(node.path(), rewards):
                p.step.scores[self.name] = sigmoid(r)
        return [[p.step.scores[self.name] for p in n.path()] for n in nodes]

    def score_steps(self, problems: Sequence[str], paths: Sequence[Sequence[str]]) -> list[list[float]]:
        """The score of every step of each (problem, steps) pair given as text (``PRMVerifier``'s interface)."""
        return self.score_paths(text_paths(problems, paths))
