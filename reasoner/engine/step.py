"""Step engines: the only way a search gets new reasoning steps.

``StepEngine.expand(nodes, k)`` returns ``k`` children for each node, generated in one batched backend call
for all nodes (of any problems). A step is the text up to the step delimiter; a child is terminal when the
model ended its answer (EOS), ran out of step tokens, or the trajectory hit the budget.

Prompts are token ids kept across steps: a node's prompt is its parent's followed by the step's own tokens, as
the model wrote them (the delimiter's token included), so a trajectory written step by step is exactly the one
the model writes in one go, and nothing is re-rendered or re-tokenized. A step written by a model with another
tokenizer is encoded from its text instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from prompts import PromptTemplate
from verifiers.likelihood import prompt_ids

from ..core.lm import LM, SamplingParams
from ..core.types import Node, Step, owned_by


@dataclass
class StepSampling:
    temperature: float = 0.0
    top_p: float = 1.0
    max_step_tokens: int = 256


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
        params = SamplingParams(
            n=k,
            temperature=self.sampling.temperature,
            top_p=self.sampling.top_p,
            stop=(self.template.step_delimiter,),
            max_tokens=self.sampling.max_step_tokens,
            lookahead=self.lookahead,
        )
        with owned_by([n.tree for n in nodes]):  # raises Cancelled when every tree is; a scheduler drops their rows
            generations = self.lm.generate([self.prompt(n) for n in nodes], params)
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

    def is_terminal(self, parent: Node, step: Step) -> bool:
        if step.finish_reason != "stop":
            return True
        if self.budget.stop_on_repeat and parent.step is not None and parent.step.text == step.text:
            return True
        return (
            parent.depth + 1 >= self.budget.max_steps
            or path_tokens(parent) + len(step.token_ids) >= self.budget.max_tokens
        )
