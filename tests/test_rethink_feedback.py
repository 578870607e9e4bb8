"""RethinkMCTS's verbal feedback (``search.rethink: feedback``): the real sandbox's execution trace of a failing
rollout reaches the model in the rethink prompt, and the rewrite replaces the erroneous thought.

The toy code model cannot read feedback, so the mechanism is shown with a scripted model on the toy tokenizer: it
plans a buggy chain of thoughts, writes the code of its last thought, and, asked to rethink, fixes the thought
only when the feedback names its bug (the failing test's expected and actual values, or the exception). With
feedback it reaches passing code; resampling the same thought (``rethink: resample``) never does.
"""

import re

import pytest

import prompts
from reasoner.backends.common import Backend
from reasoner.core.lm import Generation, Output
from reasoner.core.stats import RoleStats
from reasoner.core.types import Problem, Step, Tree
from reasoner.engine import StepBudget, StepEngine, StepSampling
from reasoner.toy import model_path
from search.rethink import RethinkMCTS
from verifiers.code import check
from verifiers.execution import ExecutionVerifier

WRONG = Problem(  # the plan adds 4 where the problem says 3: a wrong value
    "Write f(x): take x, add 3, multiply by 2.",
    tests="assert f(1) == 8\nassert f(5) == 16\n",
    id="wrong-value",
    meta={"entry_point": "f", "public_tests": "assert f(1) == 8\n"},
)
RAISES = Problem(  # the plan multiplies by a name it never defined: the program raises
    "Write f(x): take x, add 3, double it.",
    tests="assert f(1) == 8\nassert f(5) == 16\n",
    id="raises",
    meta={"entry_point": "f", "public_tests": "import math\nassert f(1) == 8\n"},
)
CHAT = prompts.PromptTemplate("chat")  # the default rethink prompt (the toy template has one for toy:code's layout)
PLANS = {WRONG.text: ["x+4", "(x+4)*2"], RAISES.text: ["x+3", "(x+3)*k"]}
# what the scripted model needs to read in the feedback to fix a thought, and the fix
FIXES = {
    "(x+4)*2": ("Expected: 8\nActual: 10", "(x+3)*2"),
    "(x+3)*k": ("NameError: name 'k' is not defined", "(x+3)*2"),
}


class ScriptedCoder(Backend):
    """Writes its plan's thoughts one per call, then the code of the last thought; asked to rethink a thought, it
    writes the fix when the prompt holds the feedback that names the bug, else the same thought again."""

    def __init__(self):
        from transformers import AutoTokenizer

        super().__init__()
        self.name = self.role = "target"
        self.tokenizer = AutoTokenizer.from_pretrained(model_path("code"))
        self.rethink_prompts: list[str] = []

    def _write(self, text: str) -> Generation:
        if text.startswith("```"):  # the code ends the answer
            return Generation(text, self.encode(text) + [self.tokenizer.eos_token_id], [], "eos")
        return Generation(text, self.encode(text + "\n\n"), [], "stop", "\n\n")

    def _next(self, prompt: str) -> str:
        if "Rethink the next thought" in prompt:
            self.rethink_prompts.append(prompt)
            thought = re.search(r"Next thought:\n(.*)\n", prompt).group(1)
            cue, fix = FIXES.get(thought, (None, thought))
            return fix if cue is not None and cue in prompt else thought
        problem, answer = prompt.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)
        steps = answer.split("<|im_start|>assistant\n", 1)[1].split("\n\n")[:-1]
        plan = PLANS[problem]
        if len(steps) < len(plan):
            return plan[len(steps)]
        return f"```python\ndef f(x):\n    return {steps[-1]}\n```"

    def generate(self, prompts, params):
        rows = [[self._write(self._next(self.decode(ids)))] * params.n for ids in prompts]
        return Output(rows, [RoleStats() for _ in rows])


def search(mode: str, n: int = 3, think: int = 2, stop_on_pass: bool = True):
    lm = ScriptedCoder()
    engine = StepEngine(lm, CHAT, StepSampling(temperature=0.8), StepBudget(max_steps=8))
    rethink = RethinkMCTS(engine, ExecutionVerifier(), n, 2, think, stop_on_pass=stop_on_pass, rethink=mode)
    trees = [Tree(WRONG), Tree(RAISES)]
    answers = rethink.run(trees)
    programs = [ExecutionVerifier().program(a[0]) for a in answers]
    return lm, trees, programs


def nodes(node):
    yield node
    for c in node.children:
        yield from nodes(c)


def test_the_rethink_prompt_carries_the_sandbox_feedback_and_the_rewrite_replaces_the_thought():
    lm, trees, programs = search("feedback", n=1, think=1)
    wrong, raises = lm.rethink_prompts  # one rethink per problem
    # the failing assert with expected vs actual, from the real sandbox run of (x+4)*2
    assert "Failed test: assert f(1) == 8\nExpected: 8\nActual: 10" in wrong
    assert WRONG.text in wrong and "Thoughts so far:\nx+4\n" in wrong and "return (x+4)*2" in wrong
    # the exception: type, message, and the program's line that raised it (the test's setup line is not a test)
    assert "Error: NameError: name 'k' is not defined\nRaised at: line 2, program: return (x+3)*k" in raises
    for tree, program in zip(trees, programs):
        assert check(program, tree.problem.tests).passed  # the rewrite was rolled out to passing code
        (new,) = [n for n in nodes(tree.root) if n.notes and "rethought" in n.notes]
        old = new.notes["rethought"]
        assert (old.step.text, new.step.text) == (list(FIXES)[trees.index(tree)], "(x+3)*2")
        assert new.parent is old.parent and old in old.parent.children  # the old thought stays, for the viewer
        assert new.notes["feedback"] in (wrong + raises)  # with the feedback it was rewritten from
        assert tree.stats.counters["rethinks_improved"] == 1
        (row,) = [r for r in tree.to_dict()["nodes"] if r.get("notes")]  # the trace keeps both, and the feedback
        assert row["text"] == "(x+3)*2" and row["notes"]["feedback"] == new.notes["feedback"]


def test_feedback_reaches_passing_code_where_resampling_does_not():
    _, trees, feedback = search("feedback")
    _, again, resampled = search("resample")
    assert all(check(p, t.problem.tests).passed for p, t in zip(feedback, trees))
    assert not any(check(p, t.problem.tests).passed for p, t in zip(resampled, again))
    assert all(t.stats.counters["rethinks"] == 3 * 2 for t in again)  # resampling tried every time, in vain


def test_a_replaced_thought_is_never_selected_again():
    _, trees, _ = search("feedback", n=12, think=1, stop_on_pass=False)  # 12 iterations: visits spread out
    for tree in trees:
        replaced = [n.notes["rethought"] for n in nodes(tree.root) if n.notes and "rethought" in n.notes]
        assert replaced and all(old.visits == 1 for old in replaced)  # its one failed rollout, never again
        assert tree.root.visits == 12 + len(replaced)


def test_rethink_mode_is_checked():
    engine = StepEngine(ScriptedCoder(), CHAT)
    with pytest.raises(ValueError, match="search.rethink 'both'.*feedback or resample"):
        RethinkMCTS(engine, ExecutionVerifier(), rethink="both")


def test_the_feedback_is_bounded_and_the_verdicts_stay_the_checkers():
    program = (
        "import os\n"
        "def f(x):\n"
        "    print('Expected: 2\\nActual: 2 ' * 500)\n"  # output that mimics feedback: kept as output, its tail
        "    return list(range(10**5)) if x == 1 else 10 // x\n"
        "def g(x):\n"
        "    while True:\n"
        "        pass\n"
    )
    tests = (
        'assert f(1) == [0, 1], "f(1) is a short list"\n'
        "try:\n    assert f(2) == 6\nexcept AssertionError:\n    pass\n"  # a test that expects the failure
        "assert f(0) == 0\n"
        "assert f(5) == 2\n"
    )
    result = check(program, tests)
    assert not result.passed and result.reason.startswith("AssertionError: f(1) is a short list (line 1, tests:")
    assert result.detail["expected"] == "[0, 1]" and len(result.detail["actual"]) <= 300
    assert result.detail["actual"].startswith("[0, 1, 2, 3,")
    tree = Tree(Problem("Write f(x).", meta={"public_tests": tests}))
    end = tree.root.add_child(Step(f"```python\n{program}```", finish_reason="eos"), terminal=True)
    verifier = ExecutionVerifier()
    assert verifier.score_paths([end])[0][-1] == 1 / 3  # three asserts (the try block is setup): f(5) passes
    text = verifier.outcome(end).feedback()
    assert text.startswith("The code passes 1 of 3 public tests.\n\nFailed test: assert f(1) == [0, 1]")
    assert "Error: ZeroDivisionError: integer division or modulo by zero\nRaised at: line 4, program:" in text
    assert len(text) < 2000  # two failures, each value, message and output tail bounded
    hang = check(program, "assert g(1) == 1\n", timeout_s=1)
    assert not hang.passed and hang.reason == "timed out after 1s" and hang.detail == {}


def test_a_template_s_rethink_fields_are_checked_when_loaded(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text('rethink_instruction: "{problem} {hint}"\n')
    with pytest.raises(ValueError, match="uses the field 'hint'; their fields: problem, thoughts, path"):
        prompts.load(str(bad))
