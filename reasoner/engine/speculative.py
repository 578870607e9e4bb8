"""Step-level speculative reasoning: the draft writes each step, the target only judges it.

``SpeculativeStepEngine.expand(nodes, k)`` has the plain engine's interface, so every search runs speculatively
without knowing it. A round: the draft proposes ``k`` steps per node, an acceptor (``verifiers.acceptors``:
SpecReason's judge, reward-guided speculation's (RSD) PRM threshold, Arbitrage's router, the target's likelihood)
scores them, and the target rewrites only the rejected ones. With ``parallel`` (the models behind a ``Scheduler``)
each node runs its own round in a thread, so a node whose draft was accepted is done while another's is still being
rewritten, and the scheduler batches what all of them ask of each model; without it, one round covers every node
(lock-step).

Reasoning models (R1-Distill, QwQ) think inside ``<think> ... </think>`` and then answer. Speculation covers the
thinking only: once a kept step (an accepted draft or a rewrite) contains ``</think>``, the target writes the rest of
that trajectory, the answer, step by step, with no draft and no judge. SpecReason (Pan et al. 2025, "SpecReason: Fast
and Accurate Inference-Time Compute via Speculative Reasoning") builds on the approximation tolerance of thinking
tokens; the answer is what is graded. Its code (ruipeterpan/specreason ``spec_reason.py``) differs: it speculates
every step to the end, stops at the first kept step containing ``boxed`` or ``Answer:``, and deletes a ``</think>``
from a kept step without one (thinking goes on). We keep the model's own ``</think>`` and let the target write the
graded answer rather than approximate it; the judge prompt leaves ``</think>`` out (``PromptTemplate.judge_prompt``).
A draft step that closes the thinking is judged like any other; text after ``</think>`` in that same step stays the
draft's.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from prompts import thinking_closed
from verifiers.acceptors import Acceptor

from ..core.types import Node
from .step import StepEngine


class SpeculativeStepEngine:
    """The draft engine writes steps, ``acceptor`` judges them, the target engine rewrites the rejected ones.

    ``first_n_target_steps``: the target writes the first n steps of every trajectory itself (SpecReason's option:
    early steps set the plan); after a kept step that closed the think block (``</think>``) it writes every step too.
    Each step records its source, the acceptor's score and verdict (and the rejected draft's text and tokens) in
    ``step.speculation``, and its seconds spent drafting, judging and rewriting in ``step.phases``; each tree counts
    ``steps_accepted``, ``steps_rejected``, ``steps_total`` and ``steps_after_thinking``.
    """

    def __init__(
        self,
        draft: StepEngine,
        target: StepEngine,
        acceptor: Acceptor,
        first_n_target_steps: int = 0,
        parallel: bool = False,
    ):
        self.draft, self.target, self.acceptor = draft, target, acceptor
        self.first_n_target_steps = first_n_target_steps
        self.template = target.template
        self.budget = target.budget
        self.pool = ThreadPoolExecutor(256, thread_name_prefix="node") if parallel else None

    def prompt(self, node: Node) -> list[int]:
        return self.target.prompt(node)

    def is_terminal(self, parent: Node, step) -> bool:
        return self.target.is_terminal(parent, step)

    def propose_from(self, nodes: list[Node], prompts: list):
        """A search's own requests (RethinkMCTS's refinement) go to the target, which writes what it rewrites."""
        return self.target.propose_from(nodes, prompts)

    def expand(self, nodes: list[Node], k: int = 1) -> list[list[Node]]:
        if self.pool is None or len(nodes) < 2:
            return self._round(nodes, k)
        return list(self.pool.map(lambda node: self._round([node], k)[0], nodes))

    def _round(self, nodes: list[Node], k: int) -> list[list[Node]]:
        """Draft, judge and rewrite ``k`` children of every node, each phase one call for all of them."""
        if not nodes:
            return []
        out: list[list[Node]] = [[] for _ in nodes]
        answering = {i for i, n in enumerate(nodes) if thinking_closed(n.steps())}
        early = [i for i, n in enumerate(nodes) if n.depth < self.first_n_target_steps or i in answering]
        late = [i for i in range(len(nodes)) if i not in early]
        for i, steps in zip(early, self.target.propose([nodes[i] for i in early], k)):
            for step in steps:
                nodes[i].tree.stats.count("steps_total")
                if i in answering:
                    nodes[i].tree.stats.count("steps_after_thinking")
                out[i].append(nodes[i].add_child(step, self.is_terminal(nodes[i], step)))
                nodes[i].tree.emit(out[i][-1])
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
            step.phases = {"draft": round(step.seconds, 5), "judge": round(judge_seconds, 5)}
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
                child.tree.emit(child)
            else:
                rejected.append(child)
        for child, (step,) in zip(rejected, self.target.propose([c.parent for c in rejected], 1)):
            draft = child.step
            step.phases = dict(draft.phases or {}, rewrite=round(step.seconds, 5))
            step.seconds += draft.seconds
            step.speculation = dict(draft.speculation, draft=draft.text, draft_tokens=len(draft.token_ids))
            child.step = step
            child.terminal = self.is_terminal(child.parent, step)
            child.tree.emit(child)
