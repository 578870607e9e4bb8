"""Step engines: the only way a search gets new reasoning steps.

``StepEngine.expand(nodes, k)`` returns ``k`` children for each node, generated in one batched backend call
for all nodes (of any problems). A step is the text up to the step delimiter; a child is terminal when the
model ended its answer (EOS), ran out of step tokens, or the trajectory hit the budget.

Prompts are token ids kept across steps: a node's prompt is its parent's followed by the step's own tokens, as
the model wrote them (the delimiter's token included), so a trajectory written step by step is exactly the one
the model writes in one go, and nothing is re-rendered or re-tokenized. A step written by a model with another
tokenizer is encoded from its text instead.

Searches that look at no step until a trajectory ends (CoT, best-of-N) skip the round trip per step:
``write_whole`` asks for whole trajectories in one request and splits them into the steps the step-wise engine
would have written (the same tokens, cut where its stop rules cut), so they cost what plain generation costs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prompts import PromptTemplate
from verifiers.likelihood import prompt_ids

from ..backends.common import make_generation
from ..backends.continuous import TAIL_CHARS, stop_found
from ..core.lm import LM, Generation, SamplingParams
from ..core.types import Node, Step, owned_by


@dataclass
class StepSampling:
    temperature: float = 0.0
    top_p: float = 1.0
    max_step_tokens: int = 256
    tpot_ms: float | None = None  # the TPOT SLO token speculation's slo_trees sizes trees by (``SamplingParams``)


@dataclass
class StepBudget:
    max_steps: int = 32  # steps per trajectory
    max_tokens: int = 4096  # generated tokens per trajectory
    stop_on_repeat: bool = False  # end a trajectory whose last two steps are equal (SpecReason's repetition guard)


def path_tokens(node: Node) -> int:
    return sum(len(n.step.token_ids) for n in node.path())


class StepEngine:
    """One model (the policy) writes every step. ``lookahead``: its calls ask the backend to write on past each step
    (``SamplingParams.lookahead``), since the next call usually continues the step just written; off for an engine
    whose steps are rarely continued by itself (the target that rewrites rejected drafts)."""

    def __init__(
        self,
        lm: LM,
        template: PromptTemplate,
        sampling: StepSampling | None = None,
        budget: StepBudget | None = None,
        lookahead: bool = True,
    ):
        self.lm = lm
        self.template = template
        self.sampling = sampling or StepSampling()
        self.budget = budget or StepBudget()
        self.lookahead = lookahead
        self._pieces: dict[int, str] = {}  # token id -> its text, decoded once (``_split``)

    def prompt(self, node: Node) -> list[int]:
        """The token ids ``self.lm`` continues from at ``node`` (``verifiers.likelihood.prompt_ids``)."""
        return prompt_ids(self.lm, self.template, node)

    def expand(self, nodes: list[Node], k: int = 1) -> list[list[Node]]:
        """``k`` new children for every node, from one batched call."""
        out = [
            [node.add_child(step, self.is_terminal(node, step)) for step in steps]
            for node, steps in zip(nodes, self.propose(nodes, k))
        ]
        for children in out:
            for child in children:
                child.tree.emit(child)
        return out

    def propose(self, nodes: list[Node], k: int = 1) -> list[list[Step]]:
        """``k`` next steps for every node, from one batched call, not yet added to the tree; the tokens are
        booked on each node's tree under this model's role."""
        if not nodes:
            return []
        for node in nodes:
            if node.terminal:
                raise ValueError(f"cannot expand a terminal node: {node}")
        return self._steps(nodes, [self.prompt(n) for n in nodes], k, self.lookahead)

    def propose_from(self, nodes: list[Node], prompts: list[Callable[[PromptTemplate, Any], str]]) -> list[Step]:
        """One step for every node, written after a prompt of the search's own (RethinkMCTS's refinement request)
        rather than after the node's path: each of ``prompts`` renders it from this engine's template and
        tokenizer. Not added to the tree; booked on each node's tree."""
        if not nodes:
            return []
        ids = [self.lm.encode(render(self.template, self.lm.tokenizer)) for render in prompts]
        return [steps[0] for steps in self._steps(nodes, ids, 1, False)]

    def _steps(self, nodes: list[Node], prompts: list[list[int]], k: int, lookahead: bool) -> list[list[Step]]:
        params = SamplingParams(
            n=k,
            temperature=self.sampling.temperature,
            top_p=self.sampling.top_p,
            stop=(self.template.step_delimiter,),
            max_tokens=self.sampling.max_step_tokens,
            lookahead=lookahead,
            tpot_ms=self.sampling.tpot_ms,
        )
        with owned_by([n.tree for n in nodes]):  # raises Cancelled when every tree is; a scheduler drops their rows
            generations = self.lm.generate(prompts, params)
        seconds = generations.total.wall_s / max(1, len(nodes) * k)
        out = []
        for node, gens, usage in zip(nodes, generations, generations.usage):
            node.tree.stats.book(self.lm.role, usage)
            out.append(
                [
                    Step(
                        g.text,
                        g.token_ids,
                        g.logprobs,
                        source=self.lm.role,
                        finish_reason=g.finish_reason,
                        seconds=seconds,
                    )
                    for g in gens
                ]
            )
        return out

    @property
    def writes_whole(self) -> bool:
        """Whether ``write_whole`` can stand in for step-wise expansion. Not with the repetition guard: a looping
        trajectory would write on to its token budget where step by step it ends after two equal steps."""
        return not self.budget.stop_on_repeat

    def write_whole(self, nodes: list[Node], k: int = 1) -> list[list[Node]]:
        """``k`` finished trajectories below every node, each written by one request and split into steps
        afterwards: one call in all, where step by step each step is a call (and re-sends its prompt). Returns
        each trajectory's last node. The split reproduces the step-wise engine's (a step ends at the token whose
        text completes the delimiter, at EOS, or after ``max_step_tokens``; a trajectory at its step or token
        budget), so a greedy trajectory is the one it writes step by step; tokens written past a budget are
        booked (they were spent) and dropped."""
        if not nodes:
            return []
        for node in nodes:
            if node.terminal:
                raise ValueError(f"cannot expand a terminal node: {node}")
        # step by step, the last step may start at max_tokens - 1 and run max_step_tokens
        room = self.budget.max_tokens - min(path_tokens(n) for n in nodes) - 1 + self.sampling.max_step_tokens
        params = SamplingParams(
            n=k,
            temperature=self.sampling.temperature,
            top_p=self.sampling.top_p,
            max_tokens=max(1, room),
            tpot_ms=self.sampling.tpot_ms,
        )
        with owned_by([n.tree for n in nodes]):
            generations = self.lm.generate([self.prompt(n) for n in nodes], params)
        out = []
        for node, gens, usage in zip(nodes, generations, generations.usage):
            node.tree.stats.book(self.lm.role, usage)
            leaves = []
            for g in gens:
                steps = self._split(g)
                seconds = generations.total.wall_s / max(1, len(nodes) * k * len(steps))
                leaf = node
                for step in steps:
                    step.seconds = seconds
                    terminal = step is steps[-1] or self.is_terminal(leaf, step)
                    leaf = leaf.add_child(step, terminal)
                    leaf.tree.emit(leaf)
                    if terminal:
                        break
                leaves.append(leaf)
            out.append(leaves)
        return out

    def _split(self, g: Generation) -> list[Step]:
        """A whole trajectory's steps, cut as the continuous batch cuts a step: after the token whose text completes
        the delimiter (``continuous.stop_found``, the batch's own rule), at EOS, or at ``max_step_tokens`` tokens."""
        delimiter, limit = self.template.step_delimiter, self.sampling.max_step_tokens
        eos = g.finish_reason == "eos"
        steps, start, text = [], 0, ""
        for i, tok in enumerate(g.token_ids):
            last = i == len(g.token_ids) - 1
            finish = None
            if last and eos:
                finish = ("eos", None)
            else:
                text = (text + self._piece(tok))[-TAIL_CHARS:]
                if delimiter and stop_found(delimiter, text, g.token_ids[: i + 1], start, self.lm.decode):
                    finish = ("stop", delimiter)
                elif i + 1 - start >= limit or last:
                    finish = ("length", None)
            if finish is not None:
                piece = make_generation(
                    self.lm.tokenizer, g.token_ids[start : i + 1], g.logprobs[start : i + 1], finish
                )
                steps.append(Step(piece.text, piece.token_ids, piece.logprobs, self.lm.role, finish[0]))
                start, text = i + 1, ""
        return steps

    def _piece(self, token: int) -> str:
        if token not in self._pieces:
            self._pieces[token] = self.lm.decode([token])
        return self._pieces[token]

    def is_terminal(self, parent: Node, step: Step) -> bool:
        if step.finish_reason != "stop":
            return True
        if self.budget.stop_on_repeat and parent.step is not None and parent.step.text == step.text:
            return True
        return (
            parent.depth + 1 >= self.budget.max_steps
            or path_tokens(parent) + len(step.token_ids) >= self.budget.max_tokens
        )
