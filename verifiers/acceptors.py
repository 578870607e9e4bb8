"""Acceptors: the decision rules of step-level speculation. Each scores a draft step (the last step of a child
node) and says whether to keep it; ``reasoner.engine.speculative`` asks for the target's rewrite of the rejected.

- ``JudgeAcceptor`` (SpecReason): the target reads the steps with the candidate last, then a judge turn, and
  the next-token distribution over the digits 0-9 gives the score: ``greedy`` (the most likely digit) or
  ``expected`` (the mean digit under the renormalised digit probabilities). Accept if score >= threshold (7).
- ``VerifierAcceptor``: any step verifier's score of the candidate, accept if >= threshold. With a PRM this is
  reward-guided speculation (RSD, threshold 0.7); with the target's ``LikelihoodVerifier`` it is our likelihood
  acceptor (one prefill, no judge prompt; threshold on the step's mean or weakest token probability).
- ``RouterAcceptor`` (Arbitrage): a learned router predicts the probability that the target would write a
  meaningfully better step; escalate (reject the draft) if it is >= threshold. ``router`` decides from the draft's
  side (its hidden state and log-probs: an accepted step costs no target forward); ``target_router`` also reads
  the target's log-probs of the step (a target prefill per step). See ``verifiers/router.py``.

Deviation from SpecReason's ``greedy``: it takes the argmax over the whole vocabulary and scores a non-digit 0;
the backend returns the digits' log-probabilities only, so we take the most likely digit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from prompts import PromptTemplate
from reasoner.core.lm import LM
from reasoner.core.types import Node

from .judge import judge_scores
from .likelihood import LikelihoodVerifier
from .router import Router


class Acceptor(Protocol):
    name: str
    threshold: float

    def judge(self, children: Sequence[Node]) -> list[tuple[float, bool]]:
        """``(score, accepted)`` for each child, whose step is the draft's candidate."""


class JudgeAcceptor:
    """SpecReason's judge: the target's 0-9 score of the last step, read from its next-token digit probabilities
    (``verifiers.judge``, which the LLM-judge verifier shares)."""

    def __init__(self, target: LM, template: PromptTemplate, threshold: float = 7.0, score: str = "expected"):
        if score not in ("greedy", "expected"):
            raise ValueError(f"unknown judge score {score!r}: use greedy or expected")
        self.target, self.template, self.threshold, self.score = target, template, threshold, score
        self.name = f"judge-{score}"

    def judge(self, children: Sequence[Node]) -> list[tuple[float, bool]]:
        scores = [9 * s for s in judge_scores(self.target, self.template, children, self.score)]
        return [(s, s >= self.threshold) for s in scores]


class VerifierAcceptor:
    """Accept a step whose verifier score (a PRM: reward-guided speculation, RSD; the target's likelihood) is at
    least the threshold."""

    def __init__(self, verifier, threshold: float):
        self.verifier, self.threshold = verifier, threshold
        self.name = verifier.name

    def judge(self, children: Sequence[Node]) -> list[tuple[float, bool]]:
        scores = [path[-1] for path in self.verifier.score_paths(children)]
        return [(s, s >= self.threshold) for s in scores]


class RouterAcceptor:
    """Arbitrage: escalate to the target when the router's P(target writes a meaningfully better step) >= threshold."""

    def __init__(self, router: Router, threshold: float = 0.5):
        self.router, self.threshold = router, threshold
        self.name = router.kind

    def judge(self, children: Sequence[Node]) -> list[tuple[float, bool]]:
        probs = self.router.predict(children)
        return [(p, p < self.threshold) for p in probs]


DEFAULT_THRESHOLDS = {"judge": 7.0, "prm": 0.7, "likelihood": 0.5, "router": 0.5, "target_router": 0.5}


def make_acceptor(config, target: LM, template: PromptTemplate, verifier=None, draft: LM | None = None) -> Acceptor:
    """The acceptor a recipe's ``step_speculation`` section describes (``verifier``: the recipe's, for ``prm``;
    ``draft``: the model that writes the steps, whose hidden states the draft-side ``router`` reads)."""
    threshold = config.threshold if config.threshold is not None else DEFAULT_THRESHOLDS[config.acceptor]
    if config.acceptor == "judge":
        return JudgeAcceptor(target, template, threshold, config.judge_score)
    if config.acceptor == "prm":
        if verifier is None:
            raise ValueError("step_speculation.acceptor=prm needs a verifier: set the recipe's verifier section")
        return VerifierAcceptor(verifier, threshold)
    if config.acceptor == "likelihood":
        return VerifierAcceptor(LikelihoodVerifier(target, template, config.reduce), threshold)
    if config.acceptor == "router" and draft is None:
        raise ValueError("step_speculation.acceptor=router reads the draft's hidden states: give the draft model")
    lm = draft if config.acceptor == "router" else target
    return RouterAcceptor(Router.load(config.router, config.acceptor, lm, template), threshold)
