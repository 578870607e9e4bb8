"""Token boundaries with the real Qwen2.5 tokenizer (tests/fixtures/qwen2.5-tokenizer, no weights): a step is scored
on the token ids the model generated, never on a re-encoding of its text and the delimiter apart.

Why it matters: Qwen writes ``.\\n\\n``, ``:\\n\\n`` and ``]\\n\\n`` as single tokens, so ``encode(step) +
encode("\\n\\n")`` is a sequence the model never produces, and its likelihood is off by orders of magnitude (one
token at ~1e-4 instead of ~0.5, measured on Qwen2.5-Coder). The toy tokenizer cannot show this: its delimiter is
always a token of its own.
"""

from pathlib import Path

import pytest

import prompts
from reasoner.backends.common import Backend
from reasoner.core.lm import Output
from reasoner.core.stats import RoleStats
from reasoner.core.types import Problem, Step, Tree
from verifiers.judge import digit_distribution
from verifiers.likelihood import LikelihoodVerifier, step_token_ids
from verifiers.router import target_logprobs

FIXTURE = Path(__file__).parent / "fixtures" / "qwen2.5-tokenizer"
PROBLEM = "Natalia sold 48 clips in April and half as many in May. How many clips did she sell?"


class RecordingLM(Backend):
    """An LM with the real Qwen tokenizer and no weights: it records what it is asked to score, and gives token
    ``t`` the log-probability ``-t / 1e6`` (so a step's score tells which tokens it was computed on)."""

    def __init__(self, tokenizer):
        super().__init__()
        self.name, self.role, self.tokenizer = "qwen-recording", "target", tokenizer
        self.scored: list[tuple[list[int], list[int]]] = []
        self.judged: list[list[int]] = []

    def score(self, prompts, continuations):
        pairs = [(self.encode(p), self.encode(c)) for p, c in zip(prompts, continuations)]
        self.scored += pairs
        return Output([[-t / 1e6 for t in c] for _, c in pairs], [RoleStats() for _ in pairs])

    def next_token_logprobs(self, prompts, candidates):
        self.judged += [self.encode(p) for p in prompts]
        return Output([{c: -1.0 for c in candidates} for _ in prompts], [RoleStats() for _ in prompts])


@pytest.fixture(scope="module")
def qwen():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(FIXTURE)


@pytest.fixture
def lm(qwen):
    return RecordingLM(qwen)


@pytest.fixture(scope="module")
def template():
    return prompts.load("qwen-math")


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def generated(tok, text, delimiter="\n\n", split=False):
    """A step as the model wrote it: its text and token ids, the delimiter's token included. ``split``: the model
    chose to write the step's last character and the delimiter as two tokens (a non-canonical tokenization, which
    a re-encoding of the text would turn into one)."""
    if split:
        return Step(text, ids(tok, text) + ids(tok, delimiter), finish_reason="stop")
    return Step(text, ids(tok, text + delimiter), finish_reason="stop")


def test_qwen_merges_a_step_end_with_the_delimiter(qwen):
    for end in (".", ":", "]"):
        together = ids(qwen, f"So x = 5{end}\n\n")
        apart = ids(qwen, f"So x = 5{end}") + ids(qwen, "\n\n")
        assert len(together) == len(apart) - 1 and qwen.decode(together[-1:]) == f"{end}\n\n"
    assert ids(qwen, ".\n\n") == [382] and ids(qwen, "\n\n") == [271]


def test_step_token_ids_are_the_generated_ids(lm, qwen, template):
    merged = generated(qwen, "She sold 48 / 2 = 24 clips in May.")
    assert merged.token_ids[-1] == 382  # ".\n\n": one token
    assert step_token_ids(lm, template, merged) == merged.token_ids
    split = generated(qwen, "In all: 48 + 24 = 72.", split=True)
    assert split.token_ids[-2:] == [13, 271]  # "." then "\n\n", as generated
    assert step_token_ids(lm, template, split) == split.token_ids
    eos = qwen.convert_tokens_to_ids("<|im_end|>")
    last = Step("The answer is $\\boxed{72}$.", ids(qwen, "The answer is $\\boxed{72}$.") + [eos], finish_reason="eos")
    assert step_token_ids(lm, template, last) == last.token_ids


def test_a_step_without_ids_is_encoded_with_its_delimiter(lm, qwen, template):
    """A step another tokenizer wrote: its text and delimiter are encoded together, as the model would write them."""
    step = Step("She sold 24 clips in May.", token_ids=[], finish_reason="stop")
    assert step_token_ids(lm, template, step) == ids(qwen, "She sold 24 clips in May.\n\n")


def path(tree, steps):
    node = tree.root
    for step in steps:
        node = node.add_child(step, terminal=step.finish_reason != "stop")
    return node


def test_likelihood_verifier_scores_the_generated_ids(lm, qwen, template):
    tree = Tree(Problem(PROBLEM))
    first = generated(qwen, "In May she sold 48 / 2 = 24 clips.")
    second = generated(qwen, "In all she sold 48 + 24 = 72 clips:", split=True)
    leaf = path(tree, [first, second])
    scores = LikelihoodVerifier(lm, template, "mean").score_paths([leaf])[0]
    prompt, continuation = lm.scored[0]
    assert prompt == ids(qwen, template.prompt(qwen, PROBLEM))
    assert continuation == first.token_ids + second.token_ids
    for step, score in zip((first, second), scores):  # each step's score is from its own generated tokens
        assert score == pytest.approx(2.718281828 ** (sum(-t / 1e6 for t in step.token_ids) / len(step.token_ids)))


def test_router_features_score_the_generated_ids_after_the_generated_prefix(lm, qwen, template):
    tree = Tree(Problem(PROBLEM))
    parent = path(tree, [generated(qwen, "In May she sold 48 / 2 = 24 clips.", split=True)])
    draft = generated(qwen, "In all: 48 + 24 = 72.")
    child = parent.add_child(draft, terminal=False)
    row = target_logprobs([child], lm, template)[0]
    prompt, continuation = lm.scored[0]
    # the prefix is the one the model continued from: the parent step's ids as generated ("." and "\n\n" apart),
    # not a re-rendering of its text (which would merge them into ".\n\n")
    assert prompt == ids(qwen, template.prompt(qwen, PROBLEM)) + parent.step.token_ids
    assert prompt[-2:] == [13, 271]
    assert continuation == draft.token_ids and continuation[-1] == 382
    assert row["target_mean_logprob"] == pytest.approx(sum(-t / 1e6 for t in draft.token_ids) / len(draft.token_ids))


def test_judge_prompt_encodes_the_steps_in_one_text(lm, qwen, template):
    """The judge reads the steps in a closed assistant turn (a context the model never generated in), so its prompt
    is rendered and encoded as one text: a step's end and the delimiter are merged as the tokenizer merges them,
    and the candidate ends at the special ``<|im_end|>``, which nothing merges with."""
    tree = Tree(Problem(PROBLEM))
    node = path(tree, [generated(qwen, "In May she sold 24 clips."), generated(qwen, "In all: 72.")])
    digit_distribution(lm, template, [node])
    (prompt,) = lm.judged
    text = template.judge_prompt(qwen, PROBLEM, ["In May she sold 24 clips."], "In all: 72.")
    assert prompt == ids(qwen, text)
    assert 382 in prompt and all(prompt[i : i + 2] != [13, 271] for i in range(len(prompt) - 1))
