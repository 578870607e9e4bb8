"""SpecReason on reasoning models (R1-Distill, QwQ): one ``<think>`` in every prompt whatever the chat template, the
judge sees the reasoning, the think tags are handled by ``step_speculation.think_rule`` (``specreason``: SpecReason's
code, speculation to the first kept step with an answer, a ``</think>`` without one removed; ``target_answers``: the
target writes what follows a kept ``</think>``), and the answer is read after the thinking.

Chat templates: DeepSeek-R1-Distill-Qwen and QwQ-32B as fixtures (tests/fixtures/chat_templates, written out from
the public templates), and Qwen2.5-Coder's own (tests/fixtures/qwen2.5-tokenizer), on the real Qwen2.5 tokenizer
(its BOS stands in where R1's would render; for the reasoning templates ``<think>`` and ``</think>`` are added as
tokens of their own, as in R1-Distill's and QwQ's vocabularies); the ``real`` test reads the installed Qwen2.5-Coder
pair's tokenizers.
"""

from pathlib import Path

import pytest

import prompts
from reasoner.backends import sources
from reasoner.backends.common import Backend
from reasoner.core.lm import Generation, Output
from reasoner.core.stats import RoleStats
from reasoner.core.types import Problem, Tree
from reasoner.engine import StepBudget, StepEngine, StepSampling
from reasoner.engine.speculative import SpeculativeStepEngine
from reasoner.recipe import Recipe
from verifiers.math import extract_answer

FIXTURES = Path(__file__).parent / "fixtures"
TEMPLATES = {
    "r1-distill": (FIXTURES / "chat_templates" / "deepseek-r1-distill-qwen.jinja").read_text(),
    "qwq": (FIXTURES / "chat_templates" / "qwq-32b.jinja").read_text(),
    "qwen2.5-coder": (FIXTURES / "qwen2.5-tokenizer" / "chat_template.jinja").read_text(),
}
PROBLEM = "What is 2 times 2?"


def tokenizer(family: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(FIXTURES / "qwen2.5-tokenizer")
    tok.chat_template = TEMPLATES[family]
    if family != "qwen2.5-coder":
        tok.add_tokens(["<think>", "</think>"])  # R1-Distill and QwQ: each tag one token
    return tok


@pytest.fixture(scope="module")
def tokenizers():
    return {family: tokenizer(family) for family in TEMPLATES}


def generation_prompt(tok) -> str:
    return tok.apply_chat_template([{"role": "user", "content": PROBLEM}], tokenize=False, add_generation_prompt=True)


@pytest.mark.parametrize("family", list(TEMPLATES))
def test_the_prompt_opens_exactly_one_think_block(family, tokenizers):
    tok = tokenizers[family]
    opens = family != "qwen2.5-coder"  # R1-Distill and QwQ open <think> themselves, Qwen2.5 does not
    assert generation_prompt(tok).endswith("<think>\n") == opens
    text = prompts.load("r1-distill").prompt(tok, PROBLEM, ["Two times two."])
    assert text.count("<think>") == 1
    assert text.endswith("<think>\nTwo times two.\n\n")


@pytest.mark.real
@pytest.mark.parametrize("model", ["qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"])
def test_the_installed_real_pair_gets_one_think_block(model):
    """The real-model pair's own tokenizers (no weights loaded): their template opens no think block, so the
    r1-distill prefix stays."""
    if not sources.installed(model):
        pytest.skip(f"the real model is not installed: run `reasoner models install {model}`")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(sources.converted_path(sources.SOURCES[model].sha256))
    assert not generation_prompt(tok).rstrip("\n").endswith("<think>")
    text = prompts.load("r1-distill").prompt(tok, PROBLEM, ["Two times two."])
    assert text.count("<think>") == 1 and text.endswith("<|im_start|>assistant\n<think>\nTwo times two.\n\n")


@pytest.mark.parametrize("family", ["r1-distill", "qwq"])
def test_the_judge_sees_every_step_and_one_think_block(family, tokenizers):
    template = prompts.load("r1-distill")
    text = template.judge_prompt(tokenizers[family], PROBLEM, ["Two times two.", "That is 4."], "Done.\n</think>")
    # both templates render an earlier assistant turn as its text after </think>: the reasoning must survive
    assert "<think>\nTwo times two.\n\nThat is 4.\n\nDone." in text
    _, asked = text.rsplit(template.judge_instruction, 1)
    assert asked.count("<think>") == 1 and asked.endswith("<think>\nI think the quality score is: ")


@pytest.mark.parametrize("family", ["r1-distill", "qwq"])
def test_the_r1_qwq_recipe_loads_and_renders(family, tokenizers):
    recipe = Recipe.load("r1-qwq-specreason-vllm")
    assert recipe.step_speculation.acceptor == "judge" and recipe.search.policy == "draft"
    template = prompts.load(recipe.prompt)
    assert template.prompt(tokenizers[family], PROBLEM).count("<think>") == 1


def test_the_answer_is_read_after_the_thinking():
    assert extract_answer("<think>\nmaybe \\boxed{5}?\n</think>\n\nSo \\boxed{4}.") == "4"
    assert extract_answer("<think>\nmaybe \\boxed{5}?\n</think>\n\nI cannot tell.") is None
    assert extract_answer("no think block: \\boxed{5}, then \\boxed{6}") == "6"


DRAFT = ["Two times two.", "That is 4.\n</think>", "The answer is \\boxed{5}."]  # the draft's answer would be wrong
TARGET_ANSWER = "The answer is \\boxed{4}."


class ScriptedLM(Backend):
    """A deterministic model on the Qwen2.5 tokenizer with R1-Distill's chat template: what it writes is a function
    of how many steps its prompt holds after ``<think>\\n``. The draft writes ``DRAFT``; the target thinks
    ``Target thought n.`` and answers ``TARGET_ANSWER`` after ``</think>``."""

    def __init__(self, role: str, tok, draft=DRAFT, eos_after_answer=True):
        super().__init__()
        self.name = self.role = role
        self.tokenizer = tok
        self.draft, self.eos_after_answer = draft, eos_after_answer

    def _write(self, text: str) -> Generation:
        if "boxed" in text and self.eos_after_answer:  # the answer ends the trajectory
            return Generation(text, self.encode(text) + [self.tokenizer.eos_token_id], [], "eos")
        return Generation(text, self.encode(text + "\n\n"), [], "stop", "\n\n")

    def generate(self, prompts, params):
        rows = []
        for ids in prompts:
            done = self.decode(ids).rsplit("<think>\n", 1)[1].split("\n\n")[:-1]
            if self.role == "draft":
                text = self.draft[min(len(done), len(self.draft) - 1)]
            else:
                closed = any("</think>" in step for step in done)
                text = TARGET_ANSWER if closed else f"Target thought {len(done)}."
            rows.append([self._write(text)] * params.n)
        return Output(rows, [RoleStats() for _ in rows])


class Acceptor:
    """Accepts every draft step (but those containing ``reject``), and records what it was asked to judge."""

    name, threshold = "scripted", 0.5

    def __init__(self, reject: str | None = None):
        self.reject, self.judged = reject, []

    def judge(self, children):
        self.judged += [c.step.text for c in children]
        return [(0.0, False) if self.reject and self.reject in c.step.text else (1.0, True) for c in children]


def solve(tok, acceptor, think_rule, **script):
    template = prompts.load("r1-distill")
    draft, target = (
        StepEngine(ScriptedLM(r, tok, **script), template, StepSampling(), StepBudget()) for r in ("draft", "target")
    )
    engine = SpeculativeStepEngine(draft, target, acceptor, think_rule=think_rule)
    tree = Tree(Problem(PROBLEM, answer="4"))
    node = tree.root
    while not node.terminal:
        (node,) = engine.expand([node], 1)[0]
    return tree, node


def test_target_answers_a_draft_step_closing_the_thinking_hands_the_answer_to_the_target(tokenizers):
    acceptor = Acceptor()
    tree, node = solve(tokenizers["r1-distill"], acceptor, "target_answers")
    steps = [n.step for n in node.path()]
    assert [s.text for s in steps] == DRAFT[:2] + [TARGET_ANSWER]
    assert [s.source for s in steps] == ["draft", "draft", "target"]
    assert steps[-1].speculation is None and all(s.speculation["accepted"] for s in steps[:2])
    assert acceptor.judged == DRAFT[:2]  # the answer was never drafted nor judged
    assert tree.stats.counters["steps_after_thinking"] == 1 and tree.stats.counters["steps_total"] == 3
    assert extract_answer(node.text()) == "4"


def test_target_answers_a_rejected_draft_closing_the_thinking_does_not_end_speculation(tokenizers):
    """Only a kept step ends the thinking: the target's rewrite thinks on, so the draft writes the next step."""
    tree, node = solve(tokenizers["r1-distill"], Acceptor(reject="</think>"), "target_answers")
    steps = [n.step for n in node.path()]
    assert [s.text for s in steps] == [DRAFT[0], "Target thought 1.", DRAFT[2]]
    assert [s.source for s in steps] == ["draft", "target", "draft"]
    assert "steps_after_thinking" not in tree.stats.counters


# SpecReason's rule (the default): its code speculates every step to the end
THINKING_ON = ["Two times two.", "That is 4.\n</think>", "Checking.", "So \\boxed{4}.", "A step after the answer."]


@pytest.mark.parametrize("family", ["r1-distill", "qwen2.5-coder"])
def test_specreason_a_kept_close_tag_without_an_answer_is_removed_and_thinking_goes_on(family, tokenizers):
    """The draft closes its thinking with no answer: the tag goes (from the text and from the prompt the models
    continue), the target, asked to rewrite the next step, thinks on rather than answering, and the first kept step
    with ``boxed`` ends the trajectory though the model did not end it (no EOS). With R1's vocabulary the tag's own
    token is dropped and the rest are the draft's tokens; Qwen2.5-Coder's merges the tag with the delimiter
    (``>\n\n``), and the prompt encodes that step from its text."""
    tok = tokenizers[family]
    tree, node = solve(tok, Acceptor(reject="Checking"), "specreason", draft=THINKING_ON, eos_after_answer=False)
    steps = [n.step for n in node.path()]
    assert [s.text for s in steps] == ["Two times two.", "That is 4.\n", "Target thought 2.", "So \\boxed{4}."]
    assert [s.source for s in steps] == ["draft", "draft", "target", "draft"]
    assert steps[1].speculation["think_tag_removed"] and tree.stats.counters["think_tags_removed"] == 1
    assert steps[-1].finish_reason == "stop" and node.terminal
    if family == "r1-distill":
        written = tok.encode("That is 4.\n</think>\n\n")
        assert steps[1].token_ids == [t for t in written if t != tok.convert_tokens_to_ids("</think>")]
    target = StepEngine(ScriptedLM("target", tok), prompts.load("r1-distill"))
    assert "</think>" not in tok.decode(target.prompt(node))
    assert extract_answer(node.text()) == "4"


def test_specreason_a_kept_step_closing_the_thinking_with_the_answer_ends_the_trajectory(tokenizers):
    draft = ["Two times two.", "That is 4.</think> So \\boxed{4}.", "A step after the answer."]
    tree, node = solve(tokenizers["r1-distill"], Acceptor(), "specreason", draft=draft, eos_after_answer=False)
    assert [n.step.text for n in node.path()] == draft[:2] and node.terminal
    assert "think_tags_removed" not in tree.stats.counters and "steps_after_thinking" not in tree.stats.counters
    assert extract_answer(node.text()) == "4"


def test_specreason_is_the_default_and_the_r1_recipe_uses_it():
    assert Recipe.load("toy-specreason").step_speculation.think_rule == "specreason"
    assert Recipe.load("r1-qwq-specreason-vllm").step_speculation.think_rule == "specreason"
