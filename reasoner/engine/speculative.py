"""Step-level speculative reasoning: the draft writes each step, the target only judges it.

``SpeculativeStepEngine.expand(nodes, k)`` has the plain engine's interface, so every search runs speculatively
without knowing it. A round: the draft proposes ``k`` steps per node, an acceptor (``verifiers.acceptors``:
SpecReason's judge, reward-guided speculation's (RSD) PRM threshold, Arbitrage's router, the target's likelihood)
scores them, and the target rewrites only the rejected ones. With ``parallel`` (the models behind a ``Scheduler``)
each node runs its own round in a thread, so a node whose draft was accepted is done while another's is still being
rewritten, and the scheduler batches what all of them ask of each model; without it, one round covers every node
(lock-step).

Reasoning models (R1-Distill, QwQ) think inside ``<think> ... </think>`` and then answer. ``think_rule`` says how
speculation meets the think tags:

- ``specreason`` (the default): as SpecReason's code does it (Pan et al. 2025, "SpecReason: Fast and Accurate
  Inference-Time Compute via Speculative Reasoning"; ruipeterpan/specreason ``spec_reason.py``, the loop after
  ``get_score``). Every step is speculated, to the end of the trajectory; a trajectory ends at the first kept step (an
  accepted draft or a rewrite) that states the answer (``prompts.states_answer``: ``boxed``, ``Answer:`` or
  ``ANSWER:``), or at the budget or a repeated step (``budget.stop_on_repeat``), as there; a kept step with
  ``</think>`` but no answer loses the tag, and thinking goes on (the code's guard against a model that stops thinking
  without answering). As there, the steps the target writes itself (``first_n_target_steps``) are kept as written,
  and a ``</think>`` in the step that states the answer stays. One deviation: EOS ends a trajectory too (the code
  would ask a model that ended its turn for another step). It is the rule of the paper's code, so the one to
  reproduce its numbers with.
- ``target_answers``: speculation covers the thinking only. Once a kept step contains ``</think>``, the target writes
  the rest of that trajectory, the answer, step by step, with no draft and no judge (``steps_after_thinking``): the
  graded answer is the target's rather than an approximation of it, at the price of target decoding after the
  thinking. Answer markers end nothing (EOS and the budget do). A draft step that closes the thinking is judged like
  any other; text after ``</think>`` in that same step stays the draft's.

Under both, the judge prompt leaves ``</think>`` out (``PromptTemplate.judge_prompt``), and each kept step is written to
the prompt as the tokens its model wrote (a removed tag's tokens are dropped, see ``drop_think_close``).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from prompts import THINK_CLOSE, states_answer, thinking_closed
from verifiers.acceptors import Acceptor

from ..core.lm import LM
from ..core.types import Node, Step
from .step import StepEngine

THINK_RULES = ("specreason", "target_answers")


def drop_think_close(step: Step, lm: LM) -> None:
    """Remove ``</think>`` from ``step``: from its text, and from its tokens (with their log-probabilities) where the
    tag is tokens of its own, as in R1-Distill's and QwQ's vocabularies (one added token). Where a tokenizer merged the
    tag with its neighbours, the tokens stay as written and no longer decode to the text; the prompt then encodes the
    step from its text (``verifiers.likelihood.step_token_ids``)."""
    step.text = step.text.replace(THINK_CLOSE, "")
    ids, logprobs = list(step.token_ids), list(step.logprobs)
    aligned = len(logprobs) == len(ids)
    pieces = [lm.decode([t]) for t in ids]
    i = 0
    while i < len(ids):
        text, j = "", i  # the longest run of tokens from i that spells a beginning of the tag
        while j < len(ids) and THINK_CLOSE.startswith(text + pieces[j]) and text != THINK_CLOSE:
            text += pieces[j]
            j += 1
        if text == THINK_CLOSE:
            del ids[i:j], pieces[i:j]
            if aligned:
                del logprobs[i:j]
        else:
            i += 1
    step.token_ids = ids
    if aligned:
        step.logprobs = logprobs


class SpeculativeStepEngine:
    """The draft engine writes steps, ``acceptor`` judges them, the target engine rewrites the rejected ones.

    ``first_n_target_steps``: the target writes the first n steps of every trajectory itself (SpecReason's option:
    early steps set the plan). ``think_rule``: ``specreason`` or ``target_answers`` (the module docstring); under
    ``target_answers`` the target also writes every step after a kept step that closed the think block. Each step
    records its source, the acceptor's score and verdict (and the rejected draft's text and tokens, and
    ``think_tag_removed``) in ``step.speculation``, and its seconds spent drafting, judging and rewriting in
    ``step.phases``; each tree counts ``steps_accepted``, ``steps_rejected``, ``steps_total``,
    ``steps_after_thinking`` (target_answers) and ``think_tags_removed`` (specreason).
    """

    def __init__(
        self,
        draft: StepEngine,
        target: StepEngine,
        acceptor: Acceptor,
        first_n_target_steps: int = 0,
        parallel: bool = False,
        think_rule: str = "specreason",
    ):
        if think_rule not in THINK_RULES:
            raise ValueError(f"unknown think_rule {think_rule!r}: use one of {', '.join(THINK_RULES)}")
        self.draft, self.target, self.acceptor = draft, target, acceptor
        self.first_n_target_steps = first_n_target_steps
        self.think_rule = think_rule
        self.template = target.template
        self.budget = target.budget
        self.pool = ThreadPoolExecutor(256, thread_name_prefix="node") if parallel else None

    def prompt(self, node: Node) -> list[int]:
        return self.target.prompt(node)

    def is_terminal(self, parent: Node, step: Step) -> bool:
        """The target engine's rule (EOS, step length, budget, repetition); under ``specreason`` also a step that
        states the answer."""
        if self.think_rule == "specreason" and states_answer(step.text):
            return True
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
        answering = set()
        if self.think_rule == "target_answers":
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
                self._keep(child, self.draft)
            else:
                rejected.append(child)
        for child, (step,) in zip(rejected, self.target.propose([c.parent for c in rejected], 1)):
            draft = child.step
            step.phases = dict(draft.phases or {}, rewrite=round(step.seconds, 5))
            step.seconds += draft.seconds
            step.speculation = dict(draft.speculation, draft=draft.text, draft_tokens=len(draft.token_ids))
            child.step = step
            self._keep(child, self.target)

    def _keep(self, child: Node, writer: StepEngine) -> None:
        """``child``'s speculated step (an accepted draft, or the rewrite of a rejected one, written by ``writer``)
        is kept: under ``specreason`` it loses a ``</think>`` that comes without the answer; then it is settled
        (terminal or not) and shown to the search's listeners."""
        step = child.step
        if self.think_rule == "specreason" and THINK_CLOSE in step.text and not states_answer(step.text):
            drop_think_close(step, writer.lm)
            step.speculation["think_tag_removed"] = True
            child.tree.stats.count("think_tags_removed")
        child.terminal = self.is_terminal(child.parent, step)
        child.tree.emit(child)
