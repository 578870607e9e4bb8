"""Step-level speculative reasoning: the draft writes each step, the target only judges it.

``SpeculativeStepEngine.expand(nodes, k)`` has the plain engine's interface, so every search runs speculatively
without knowing it. One round, batched over every node of every problem: the draft proposes ``k`` steps per
node (one call), an acceptor scores all of them (one target call), and the target rewrites only the rejected
ones (one call). Acceptors:

- ``JudgeAcceptor`` (SpecReason): the target reads the steps with the candidate last, then a judge turn, and
  the next-token distribution over the digits 0-9 gives the score: ``greedy`` (the most likely digit) or
  ``expected`` (the mean digit under the renormalised digit probabilities). Accept if score >= threshold (7).
- ``VerifierAcceptor``: any step verifier's score of the candidate, accept if >= threshold. With a PRM this is
  RSD (threshold 0.7); with the target's ``LikelihoodVerifier`` it is our likelihood acceptor (one prefill,
  no judge prompt; threshold on the step's mean or weakest token probability).
- ``RouterAcceptor`` (Arbitrage): a learned router predicts the probability that the target would write a
  meaningfully better step; escalate (reject the draft) if it is >= threshold. See ``verifiers/router.py``.

Deviation from SpecReason's ``greedy``: it takes the argmax over the whole vocabulary and scores a non-digit 0;
the backend returns the digits' log-probabilities only, so we take the most likely digit.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from prompts import PromptTemplate

from .backends import LM
from .engine import StepEngine
from .types import Node


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
        from verifiers.judge import judge_scores

        scores = [9 * s for s in judge_scores(self.target, self.template, children, self.score)]
        return [(s, s >= self.threshold) for s in scores]


class VerifierAcceptor:
    """Accept a step whose verifier score (PRM: RSD; the target's likelihood) is at least the threshold."""

    def __init__(self, verifier, threshold: float):
        self.verifier, self.threshold = verifier, threshold
        self.name = verifier.name

    def judge(self, children: Sequence[Node]) -> list[tuple[float, bool]]:
        scores = [path[-1] for path in self.verifier.score_paths(children)]
        return [(s, s >= self.threshold) for s in scores]


class RouterAcceptor:
    """Arbitrage: escalate to the target when the router's P(target writes a meaningfully better step) >= threshold."""

    def __init__(self, router, threshold: float = 0.5):
        self.router, self.threshold = router, threshold
        self.name = "router"

    def judge(self, children: Sequence[Node]) -> list[tuple[float, bool]]:
        probs = self.router.predict(children)
        return [(p, p < self.threshold) for p in probs]


class SpeculativeStepEngine:
    """The draft engine writes steps, ``acceptor`` judges them, the target engine rewrites the rejected ones.

    ``first_n_target_steps``: the target writes the first n steps of every trajectory itself (SpecReason's option:
    early steps set the plan). Each step records its source, the acceptor's score and verdict (and the rejected
    draft's text) in ``step.speculation``; each tree counts ``steps_accepted``, ``steps_rejected``, ``steps_total``.
    """

    def __init__(self, draft: StepEngine, target: StepEngine, acceptor: Acceptor, first_n_target_steps: int = 0):
        self.draft, self.target, self.acceptor = draft, target, acceptor
        self.first_n_target_steps = first_n_target_steps
        self.template = target.template
        self.budget = target.budget

    def prompt(self, node: Node) -> str:
        return self.target.prompt(node)

    def is_terminal(self, parent: Node, step) -> bool:
        return self.target.is_terminal(parent, step)

    def expand(self, nodes: list[Node], k: int = 1) -> list[list[Node]]:
        if not nodes:
            return []
        out: list[list[Node]] = [[] for _ in nodes]
        early = [i for i, n in enumerate(nodes) if n.depth < self.first_n_target_steps]
        late = [i for i, n in enumerate(nodes) if n.depth >= self.first_n_target_steps]
        for i, steps in zip(early, self.target.propose([nodes[i] for i in early], k)):
            for step in steps:
                nodes[i].tree.stats.count("steps_total")
                out[i].append(nodes[i].add_child(step, self.is_terminal(nodes[i], step)))
        children = []
        for i, steps in zip(late, self.draft.propose([nodes[i] for i in late], k)):
            out[i] += [nodes[i].add_child(step, False) for step in steps]
            children += out[i]
        if children:
            self._judge(children)
        return out

    def _judge(self, children: list[Node]) -> None:
        """Score every draft step in one acceptor call; the target rewrites the rejected ones in one call."""
        start = time.perf_counter()
        verdicts = self.acceptor.judge(children)
        judge_seconds = (time.perf_counter() - start) / len(children)
        rejected = []
        for child, (score, accepted) in zip(children, verdicts):
            step = child.step
            step.seconds += judge_seconds
            step.speculation = {
                "acceptor": self.acceptor.name,
                "score": round(float(score), 4),
                "accepted": bool(accepted),
            }
            stats = child.tree.stats
            stats.count("steps_total")
            stats.count("steps_accepted" if accepted else "steps_rejected")
            if accepted:
                child.terminal = self.is_terminal(child.parent, step)
            else:
                rejected.append(child)
        for child, (step,) in zip(rejected, self.target.propose([c.parent for c in rejected], 1)):
            draft = child.step
            step.seconds += draft.seconds
            step.speculation = dict(draft.speculation, draft=draft.text)
            child.step = step
            child.terminal = self.is_terminal(child.parent, step)


DEFAULT_THRESHOLDS = {"judge": 7.0, "prm": 0.7, "likelihood": 0.5, "router": 0.5}


def make_acceptor(config, target: LM, template: PromptTemplate, verifier=None) -> Acceptor:
    """The acceptor a recipe's ``step_speculation`` section describes (``verifier``: the recipe's, for ``prm``)."""
    threshold = config.threshold if config.threshold is not None else DEFAULT_THRESHOLDS[config.acceptor]
    if config.acceptor == "judge":
        return JudgeAcceptor(target, template, threshold, config.judge_score)
    if config.acceptor == "prm":
        if verifier is None:
            raise ValueError("step_speculation.acceptor=prm needs a verifier: set the recipe's verifier section")
        return VerifierAcceptor(verifier, threshold)
    if config.acceptor == "likelihood":
        from verifiers.likelihood import LikelihoodVerifier

        return VerifierAcceptor(LikelihoodVerifier(target, template, config.reduce), threshold)
    from verifiers.router import Router

    return RouterAcceptor(Router.load(config.router, target, template), threshold)
