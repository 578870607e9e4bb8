"""A verifier from a model's own likelihood: the (usually larger) model's teacher-forced probability of each step.

One prefill per trajectory scores all of its steps. A step's score is the geometric-mean probability of its
tokens (``reduce="mean"``) or the probability of its least likely token (``reduce="min"``); the delimiter (or
EOS) that ends the step is part of it, since ending a step there is the model's choice too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from prompts import PromptTemplate
from reasoner.core.lm import LM
from reasoner.core.types import Node, Step


def step_token_ids(lm: LM, template: PromptTemplate, step: Step) -> list[int]:
    """The tokens ``lm`` writes for ``step``: its text, then the delimiter that ended it (or EOS). These are the
    tokens the step was generated as, where they are ``lm``'s tokens for that text (the same tokenizer wrote it),
    never a re-encoding of the text and the delimiter apart: real tokenizers merge them (Qwen writes ``.\n\n`` as
    one token), and the split sequence is one the model never produces. A step another tokenizer wrote is encoded
    from its text and delimiter together."""
    eos = lm.tokenizer.eos_token_id if step.finish_reason == "eos" else None
    text = step.text + (template.step_delimiter if step.finish_reason == "stop" else "")
    if step.token_ids:
        body = step.token_ids[:-1] if eos is not None and step.token_ids[-1] == eos else step.token_ids
        if lm.decode(body) == text:
            return list(body) + ([eos] if eos is not None else [])
    return lm.encode(text) + ([eos] if eos is not None else [])


def prompt_ids(lm: LM, template: PromptTemplate, node: Node) -> list[int]:
    """The token ids ``lm`` continues from at ``node``: the rendered problem, then every step on the path as the
    tokens it was generated as (``step_token_ids``). Kept on the tree, per model and problem text (a search may
    rewrite the problem for a while), so the step engine, the verifiers and the
    router all see the sequence the model wrote, never a re-rendering of the steps' text."""
    key = (lm.name, node.tree.problem.text, node)
    ids = node.tree.prompt_ids.get(key)
    if ids is None:
        if node.parent is None:
            ids = lm.encode(template.prompt(lm.tokenizer, node.tree.problem.text))
        else:
            ids = prompt_ids(lm, template, node.parent) + step_token_ids(lm, template, node.step)
        node.tree.prompt_ids[key] = ids
    return ids


def step_logprobs(lm: LM, template: PromptTemplate, nodes: Sequence[Node]) -> list[list[list[float]]]:
    """``lm``'s teacher-forced log-probability of every token of every step on each node's path (the tokens of
    ``step_token_ids``), one prefill per path, booked to the node's tree: ``[node][step][token]``."""
    if not nodes:
        return []
    prompts, continuations, pieces = [], [], []
    for node in nodes:
        ids = [step_token_ids(lm, template, p.step) for p in node.path()]
        prompts.append(prompt_ids(lm, template, node.tree.root))
        continuations.append([t for piece in ids for t in piece])
        pieces.append([len(piece) for piece in ids])
    logprobs = lm.score(prompts, continuations)
    out = []
    for node, lps, lengths, usage in zip(nodes, logprobs, pieces, logprobs.usage):
        node.tree.stats.book(lm.role, usage)
        ends = [sum(lengths[: k + 1]) for k in range(len(lengths))]
        out.append([lps[end - k : end] for end, k in zip(ends, lengths)])
    return out


class LikelihoodVerifier:
    def __init__(self, lm: LM, template: PromptTemplate, reduce: str = "mean"):
        if reduce not in ("mean", "min"):
            raise ValueError(f"unknown likelihood reduction {reduce!r}: use mean or min")
        self.lm, self.template, self.reduce = lm, template, reduce
        self.name = f"likelihood-{reduce}"

    def score_paths(self, nodes: Sequence[Node]) -> list[list[float]]:
        todo = [n for n in nodes if any(self.name not in p.step.scores for p in n.path())]
        for node, steps in zip(todo, step_logprobs(self.lm, self.template, todo)):
            for p, seg in zip(node.path(), steps):
                if not seg:
                    p.step.scores[self.name] = 0.0
                elif self.reduce == "mean":
                    p.step.scores[self.name] = math.exp(sum(seg) / len(seg))
                else:
                    p.step.scores[self.name] = math.exp(min(seg))
        return [[p.step.scores[self.name] for p in n.path()] for n in nodes]
