"""An LLM judge as a step verifier: SpecReason's 0-9 judgement of the last step, read from one next token.

The judge prompt is the one step speculation uses (``PromptTemplate.judge_prompt``: the steps so far with
the candidate last, a user turn asking for a score from 0 to 9, and the assistant prefix after which the
next token is the digit). One prefill per step, no decoding: the digit's distribution comes from the
next-token log-probabilities. ``judge_scores`` is the reusable function (a model, a template, nodes -> a
score per node's last step in [0, 1]); ``JudgeVerifier`` caches it per step for searches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from prompts import PromptTemplate
from reasoner.core.types import Node

DIGITS = tuple(str(d) for d in range(10))


def digit_distribution(lm, template: PromptTemplate, nodes: Sequence[Node]) -> list[list[float]]:
    """For each node, the judge's probabilities of the digits 0-9 (renormalised over the digits) for its
    last step, in one batched call; the judge prompts' tokens are booked on each node's tree."""
    prompts = [
        lm.encode(template.judge_prompt(lm.tokenizer, n.tree.problem.text, n.steps()[:-1], n.step.text)) for n in nodes
    ]
    if not prompts:
        return []
    judged = lm.next_token_logprobs(prompts, DIGITS)
    out = []
    for node, lps, usage in zip(nodes, judged, judged.usage):
        node.tree.stats.book(lm.role, usage)
        top = max(lps.values())
        p = [math.exp(lps[d] - top) for d in DIGITS]
        out.append([x / sum(p) for x in p])
    return out


def judge_scores(lm, template: PromptTemplate, nodes: Sequence[Node], how: str = "expected") -> list[float]:
    """The judge's score of each node's last step in [0, 1]: the expected digit / 9 (SpecReason's
    ``average``) or the most likely digit / 9 (``greedy``)."""
    if how not in ("expected", "greedy"):
        raise ValueError(f"unknown judge score {how!r}: use expected or greedy")
    dists = digit_distribution(lm, template, nodes)
    if how == "expected":
        return [sum(d * p for d, p in enumerate(dist)) / 9 for dist in dists]
    return [max(range(10), key=dist.__getitem__) / 9 for dist in dists]


class JudgeVerifier:
    def __init__(self, lm, template: PromptTemplate, how: str = "expected"):
        self.lm, self.template, self.how = lm, template, how
        self.name = f"judge-{how}"

    def score_paths(self, nodes: Sequence[Node]) -> list[list[float]]:
        todo, seen = [], set()
        for node in nodes:
            for p in node.path():
                if self.name not in p.step.scores and id(p) not in seen:
                    seen.add(id(p))
                    todo.append(p)
        for p, s in zip(todo, judge_scores(self.lm, self.template, todo, self.how)):
            p.step.scores[self.name] = s
        return [[p.step.scores[self.name] for p in n.path()] for n in nodes]
