"""Prompt templates per model family: data in ``templates/*.yaml``, and this tiny loader.

A template turns a problem and the reasoning steps written so far into the text a chat model continues:
the chat template of the model's tokenizer renders the turns, then the steps are appended to the open
assistant turn (what vLLM calls ``continue_final_message``), so a step is always generated, scored or
judged on the same prefix and prefix caches hit. Two requests have turns of their own: SpecReason's judge
(``judge_prompt``) and RethinkMCTS's rethink (``rethink_prompt``: rewrite an erroneous thought from the
execution feedback; a template's ``rethink_instruction`` and ``rethink_prefix`` may use {problem}, {thoughts},
{path} (the thoughts as the assistant turn holds them), {thought}, {code} and {feedback}).

Reasoning models (DeepSeek-R1-Distill, QwQ) think inside ``<think> ... </think>`` and answer after it. Their current
chat templates open the ``<think>`` block themselves in the generation prompt; a template's ``assistant_prefix`` (and
``judge_prefix``) that opens one too is trimmed then, so the model sees exactly one ``<think>`` whichever template
version its tokenizer carries. How step speculation treats the tags (``thinking_closed``, ``states_answer``) is
``step_speculation.think_rule`` (``reasoner/engine/speculative.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

TEMPLATE_DIR = Path(__file__).parent / "templates"
PROBTREE_DIR = Path(__file__).parent / "probtree"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def after_head(head: str, prefix: str) -> str:
    """``prefix`` without the ``<think>`` that ``head`` (a rendered generation prompt) already ends with: the
    R1-Distill and QwQ chat templates end theirs with ``<think>\\n``, older R1 templates and non-reasoning models
    (Qwen2.5) open no think block, and there the prefix stays whole."""
    if head.rstrip("\n").endswith(THINK_OPEN) and prefix.startswith(THINK_OPEN):
        prefix = prefix[len(THINK_OPEN) :]
        return prefix.lstrip("\n") if head.endswith("\n") else prefix
    return prefix


def thinking_closed(steps: list[str]) -> bool:
    """Whether a step of ``steps`` closed the think block (``</think>``): what follows is the answer."""
    return any(THINK_CLOSE in s for s in steps)


# What SpecReason's code takes for a step that states the final answer (ruipeterpan/specreason ``spec_reason.py``,
# ``generate_new_step``: ``finished = any(x in step_str for x in ["boxed", "Answer:", "ANSWER:"])``); its prompts ask
# for the answer in ``\boxed{}``, as ours (r1-distill, qwen-math, toy) do.
ANSWER_MARKERS = ("boxed", "Answer:", "ANSWER:")


def states_answer(step: str) -> bool:
    """Whether ``step`` states the final answer (SpecReason's ``ANSWER_MARKERS``)."""
    return any(marker in step for marker in ANSWER_MARKERS)


# RethinkMCTS's refinement request (arXiv 2409.09584, its "rethink" prompt in spirit, not in words): the problem,
# the thoughts before the erroneous one, that thought, the code written after it and the execution feedback.
RETHINK_INSTRUCTION = (
    "{problem}\n\n"
    "Thoughts so far:\n{thoughts}\n\n"
    "Next thought:\n{thought}\n\n"
    "The code written from these thoughts:\n```python\n{code}```\n\n"
    "It fails the public tests. Execution feedback:\n{feedback}\n\n"
    "Rethink the next thought: rewrite it so that the code written from it passes the tests. "
    "Reply with the rewritten thought only."
)
RETHINK_FIELDS = ("problem", "thoughts", "path", "thought", "code", "feedback")


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    user: str = "{problem}"
    system: str | None = None
    assistant_prefix: str = ""
    step_delimiter: str = "\n\n"
    judge_instruction: str = "Evaluate the last step. Assign a score from 0 to 9."
    judge_prefix: str = "I think the quality score is: "
    rethink_instruction: str = RETHINK_INSTRUCTION
    rethink_prefix: str = ""
    description: str = ""

    def messages(self, problem: str) -> list[dict]:
        out = [{"role": "system", "content": self.system}] if self.system else []
        return out + [{"role": "user", "content": self.user.format(problem=problem)}]

    def steps_text(self, steps: list[str], open_step: bool = True) -> str:
        """The assistant text for ``steps``; with ``open_step`` a delimiter follows, ready for the next step."""
        text = self.step_delimiter.join(steps)
        return text + self.step_delimiter if steps and open_step else text

    def prompt(self, tokenizer, problem: str, steps: list[str] = ()) -> str:
        """Chat-rendered text after which the model writes the next step."""
        head = tokenizer.apply_chat_template(self.messages(problem), tokenize=False, add_generation_prompt=True)
        return head + after_head(head, self.assistant_prefix) + self.steps_text(list(steps))

    def judge_prompt(self, tokenizer, problem: str, steps: list[str], candidate: str) -> str:
        """SpecReason's judge: the steps with the candidate last, a user turn asking for a 0-9 score, and an
        assistant prefix after which the next token is the score digit. A ``</think>`` in the steps is left out:
        R1-Distill and QwQ templates render an earlier assistant turn as only its text after ``</think>``, which
        would hide the reasoning from the judge (SpecReason's code keeps ``</think>`` out of that turn for the same
        reason, ruipeterpan/specreason ``spec_reason.py`` ``get_score``)."""
        thought = self.assistant_prefix + self.steps_text(list(steps) + [candidate], open_step=False)
        messages = self.messages(problem) + [
            {"role": "assistant", "content": thought.replace(THINK_CLOSE, "")},
            {"role": "user", "content": self.judge_instruction},
        ]
        head = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return head + after_head(head, self.judge_prefix)

    def rethink_prompt(self, tokenizer, problem: str, steps: list[str], thought: str, code: str, feedback: str) -> str:
        """RethinkMCTS's refinement: one user turn (``rethink_instruction``) with the problem, the thoughts before
        the erroneous one (``steps``), that ``thought``, the failing ``code`` and the execution ``feedback``;
        the model's reply (after ``rethink_prefix``), up to the step delimiter, is the refined thought."""
        fields = {
            "problem": problem,
            "thoughts": "\n\n".join(steps) if steps else "(none)",
            "path": self.steps_text(list(steps)),  # the thoughts as the assistant wrote them, delimiter after
            "thought": thought.strip(),
            "code": code,
            "feedback": feedback,
        }
        user = self.rethink_instruction.format(**fields)
        messages = self.messages(problem)[:-1] + [{"role": "user", "content": user}]  # the system turn, if any
        head = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return head + after_head(head, self.rethink_prefix.format(**fields))


def available() -> list[str]:
    return sorted(p.stem for p in TEMPLATE_DIR.glob("*.yaml"))


@cache
def load(name: str) -> PromptTemplate:
    """The template called ``name`` (a file in ``prompts/templates``) or at a path to a YAML file."""
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        path = TEMPLATE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown prompt template {name!r}: use one of {available()} or a path to a YAML file")
    data = yaml.safe_load(path.read_text()) or {}
    try:
        template = PromptTemplate(name=path.stem, **data)
        for text in (template.rethink_instruction, template.rethink_prefix):
            text.format(**{k: "" for k in RETHINK_FIELDS})
        return template
    except (KeyError, IndexError) as e:
        raise ValueError(
            f"prompt template {path}: rethink_instruction or rethink_prefix uses the field {e}; "
            f"their fields: {', '.join(RETHINK_FIELDS)}"
        ) from None
    except TypeError as e:
        raise ValueError(
            f"prompt template {path}: {e}; allowed keys: {list(PromptTemplate.__dataclass_fields__)[1:]}"
        ) from None


@dataclass(frozen=True)
class ProbTreePrompts:
    """The user turns of ProbTree's calls (``search.probtree``), each with the fields it is formatted with."""

    name: str
    decompose: str  # {question}
    closed_book: str  # {question}
    open_book: str  # {question}, {passages}
    aggregate: str  # {question}, {context}

    FIELDS = {
        "decompose": ("question",),
        "closed_book": ("question",),
        "open_book": ("question", "passages"),
        "aggregate": ("question", "context"),
    }


@cache
def probtree(name: str = "default") -> ProbTreePrompts:
    """ProbTree's prompt set called ``name`` (a file in ``prompts/probtree``) or at a path to a YAML file; raises
    ``ValueError`` naming the missing key or placeholder."""
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        path = PROBTREE_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROBTREE_DIR.glob("*.yaml"))
        raise ValueError(f"unknown ProbTree prompt set {name!r}: use one of {known} or a path to a YAML file")
    data = yaml.safe_load(path.read_text()) or {}
    fields = ProbTreePrompts.FIELDS
    if not isinstance(data, dict) or set(data) != set(fields):
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"ProbTree prompt set {path}: needs exactly the keys {sorted(fields)}, got {got}")
    for key, names in fields.items():
        missing = ["{" + n + "}" for n in names if "{" + n + "}" not in str(data[key])]
        if missing:
            raise ValueError(f"ProbTree prompt set {path}: {key} must contain {', '.join(missing)}")
    return ProbTreePrompts(name=path.stem, **{k: str(v) for k, v in data.items()})
