"""SpecReason on reasoning models (R1-Distill, QwQ): one ``<think>`` in every prompt whatever the chat template, the
judge sees the reasoning, speculation ends with the thinking (``</think>``), and the answer is read after it.

Chat templates: DeepSeek-R1-Distill-Qwen and QwQ-32B as fixtures (tests/fixtures/chat_templates, written out from
the public templates), and Qwen2.5-Coder's own (tests/fixtures/qwen2.5-tokenizer), on the real Qwen2.5 tokenizer
(its BOS stands in where R1's would render); the ``real`` test reads the installed Qwen2.5-Coder pair's tokenizers.
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

    def __init__(self, role: str, tok):
        super().__init__()
        self.name = self.role = role
        self.tokenizer = tok

    def _write(self, text: str) -> Generation:
        if "boxed" in text:  # the answer ends the trajectory
            return Generation(text, self.encode(text) + [self.tokenizer.eos_token_id], [], "eos")
        return Generation(text, self.encode(text + "\n\n"), [], "stop", "\n\n")

    def generate(self, prompts, params):
        rows = []
        for ids in prompts:
            done = self.decode(ids).rsplit("<think>\n", 1)[1].split("\n\n")[:-1]
            if self.role == "draft":
                text = DRAFT[len(done)]
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


def solve(tok, acceptor):
    template = prompts.load("r1-distill")
    draft, target = (
        StepEngine(ScriptedLM(r, tok), template, StepSampling(), StepBudget()) for r in ("draft", "target")
    )
    engine = SpeculativeStepEngine(draft, target, acceptor)
    tree = Tree(Problem(PROBLEM, answer="4"))
    node = tree.root
    while not node.terminal:
        (node,) = engine.expand([node], 1)[0]
    return tree, node


def test_a_draft_step_closing_the_thinking_hands_the_answer_to_the_target(tokenizers):
    acceptor = Acceptor()
    tree, node = solve(tokenizers["r1-distill"], acceptor)
    steps = [n.step for n in node.path()]
    assert [s.text for s in steps] == DRAFT[:2] + [TARGET_ANSWER]
    assert [s.source for s in steps] == ["draft", "draft", "target"]
    assert steps[-1].speculation is None and all(s.speculation["accepted"] for s in steps[:2])
    assert acceptor.judged == DRAFT[:2]  # the answer was never drafted nor judged
    assert tree.stats.counters["steps_after_thinking"] == 1 and tree.stats.counters["steps_total"] == 3
    assert extract_answer(node.text()) == "4"


def test_a_rejected_draft_closing_the_thinking_does_not_end_speculation(tokenizers):
    """Only a kept step ends the thinking: the target's rewrite thinks on, so the draft writes the next step."""
    tree, node = solve(tokenizers["r1-distill"], Acceptor(reject="</think>"))
    steps = [n.step for n in node.path()]
    assert [s.text for s in steps] == [DRAFT[0], "Target thought 1.", DRAFT[2]]
    assert [s.source for s in steps] == ["draft", "target", "draft"]
    assert "steps_after_thinking" not in tree.stats.counters
