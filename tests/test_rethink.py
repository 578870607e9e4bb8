"""RethinkMCTS on the toy code task: the public-test verifier (real sandbox), the rethink search (real toy:code),
the recipe end to end, and `reasoner solve --tests`."""

import json
import subprocess
import sys

import pytest

from evals.runner import evaluate
from evals.suites import load_suite
from reasoner import Reasoner
from reasoner.core.types import Problem, Step, Tree
from reasoner.recipe import Recipe, RecipeError, SuiteConfig
from search.common import leaves
from verifiers.code import check
from verifiers.execution import (
    ExecutionVerifier,
    doctest_asserts,
    public_tests,
    split_tests,
)

PUBLIC = "import math\nassert f(1) == 2\nassert f(2) == 3\nassert f(10) == 11\nassert math.floor(f(0)) == 1\n"


def finished(tree: Tree, program: str, thoughts=("x+1",)):
    node = tree.root
    for t in thoughts:
        node = node.add_child(Step(t), terminal=False)
    return node.add_child(Step(f"```python\n{program}\n```", finish_reason="eos"), terminal=True)


def test_verifier_scores_the_public_pass_rate_of_finished_programs_only():
    tree = Tree(Problem("Write f(x): take x, add 1.", meta={"public_tests": PUBLIC}))
    v = ExecutionVerifier()
    nodes = [
        finished(tree, "def f(x):\n    return x+1"),  # all 4
        finished(tree, "def f(x):\n    return x+1 if x < 5 else 0"),  # 3 of 4
        finished(tree, "def f(x):\n    return 2"),  # only f(1)
        finished(tree, "def f(x):\n    return -x"),  # none
        finished(tree, "import os\nos.abort()"),  # the interpreter crashes
        tree.root.add_child(Step("x+1"), terminal=False),  # unfinished
    ]
    scores = v.score_paths(nodes)
    assert [s[-1] for s in scores[:5]] == [1.0, 0.75, 0.25, 0.0, 0.0]
    assert scores[0] == [0.0, 1.0] and scores[5] == [
        0.0
    ]  # thoughts score 0: RethinkMCTS rewards finished rollouts only
    assert "assert f(10) == 11" in v.outcome(nodes[1]).reason  # the feedback: the first failing test
    assert v.outcome(nodes[4]).reason == "killed by SIGABRT"  # the crash was the sandbox's; this process goes on
    assert v.outcome(nodes[5]) is None
    runs = tree.stats.counters["sandbox_runs"]
    assert runs == 1 + 4 * (1 + 4)  # passing: one run; failing with 4 tests: one run, then one per test
    again = finished(tree, "def f(x):\n    return 2", thoughts=("x*1+1",))  # the same program on another path: cached
    assert v.score_paths([again])[0][-1] == 0.25 and tree.stats.counters["sandbox_runs"] == runs


def test_public_tests_come_from_meta_or_doctests_else_a_clear_error():
    assert public_tests(Problem("p", meta={"public_tests": "assert f(1) == 2\n"})) == "assert f(1) == 2\n"
    prompt = 'def add(a, b):\n    """Add.\n    >>> add(1, 2)  # (a comment\n    3\n    >>> print("free text")\n    free text\n    """\n'  # noqa: E501
    assert doctest_asserts(prompt) == "assert (add(1, 2)) == (3)\n"
    assert public_tests(Problem(prompt, meta={"prompt": prompt})) == "assert (add(1, 2)) == (3)\n"
    with pytest.raises(ValueError, match="has no public tests.*--tests"):
        public_tests(Problem("Write f(x): take x, add 1.", id="p1"))
    assert split_tests(PUBLIC)[3] == "import math\nassert math.floor(f(0)) == 1\n"


def test_recipe_rules_for_tests_and_rethink():
    assert Recipe.load(None, ["verifier.type=tests"]).verifier.aggregate == "last"
    with pytest.raises(RecipeError, match="verifier.aggregate=last"):
        Recipe.load(None, ["verifier.type=tests", "verifier.aggregate=min"])
    with pytest.raises(RecipeError, match="rethink_mcts .*verifier.type=tests"):
        Recipe.load("toy-code-rethink", ["verifier.type=likelihood"])
    r = Recipe.load("toy-code-rethink")
    assert Recipe.validated(r.model_dump()) == r  # workers rebuild it from a dump


CODE = load_suite(SuiteConfig(name="toy-code", size=8))  # 0: toy:code gets it wrong whatever it samples; 1: easy


def solve(overrides, problems):
    r = Reasoner(Recipe.load("toy-code-rethink", overrides))
    solutions = r.solve_many(problems)
    return r, solutions, [s.tree for s in solutions]


def nodes(node):
    yield node
    for c in node.children:
        yield from nodes(c)


def test_rethink_regenerates_a_thought_of_each_failing_rollout():
    r, solutions, trees = solve(["search.n=2"], [CODE[0], CODE[1]])
    hard, easy = trees
    c = hard.stats.counters
    assert c["iterations"] == 2 and c["rethinks"] == 2 * 2  # never passes: every rollout is rethought twice
    assert hard.root.visits == c["rollouts"] == 2 + 4  # every rollout is backed up
    assert sum(x.visits for x in leaves(hard.root) if x.terminal) == hard.root.visits
    pairs = [(n.notes["rethought"], n) for n in nodes(hard.root) if n.notes and "rethought" in n.notes]
    assert len(pairs) == 4
    for old, new in pairs:  # the regenerated thought is a sibling of the rethought one; both stay in the tree
        assert new is not old and new.parent is old.parent and old in old.parent.children and new in old.parent.children
        assert not old.terminal and new.visits >= 1
    # the easy problem passes its public test at once: the search stops there, no rethink
    assert easy.stats.counters["iterations"] == 1 and "rethinks" not in easy.stats.counters
    assert check(
        solutions[1].candidates[0].steps[-1].text.split("```python\n")[1].split("```")[0], CODE[1].tests
    ).passed


def test_the_recipe_rethinks_from_the_sandbox_feedback():
    """toy-code-rethink uses ``search.rethink: feedback``: the toy model is handed the rethink prompt with the real
    run's failing test, expected and actual value (whether it can use it: tests/test_rethink_feedback.py)."""
    r = Reasoner(Recipe.load("toy-code-rethink", ["search.n=1", "search.max_think_times=1"]))
    assert r.recipe.search.rethink == "feedback"
    prompts, lm = [], r.engine.lm
    generate = lm.generate
    lm.generate = lambda ids, params: prompts.extend(map(lm.decode, ids)) or generate(ids, params)
    solution = r.solve(CODE[0])
    (asked,) = [p for p in prompts if "fails the tests" in p]  # the one rethink
    assert CODE[0].text in asked and "Failed test: assert f(1) == 22\nExpected: 22\nActual: " in asked
    (new,) = [n for n in nodes(solution.tree.root) if n.notes and "rethought" in n.notes]
    before = "\n\n".join(n.step.text for n in new.path()[:-1])  # the toy layout: then the thoughts before it
    assert asked.endswith("<|im_start|>assistant\n" + (before + "\n\n" if before else ""))
    assert new.notes["feedback"] in asked and new.parent is new.notes["rethought"].parent
    with pytest.raises(RecipeError, match="rethink"):
        Recipe.load("toy-code-rethink", ["search.rethink=both"])


def test_rethink_recipe_end_to_end(tmp_path):
    recipe = Recipe.load("toy-code-rethink", ["suite.size=4", "search.n=4"])
    summary = evaluate(recipe, tmp_path, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert summary["n"] == 4 and summary["counters"]["rollouts"] >= 4 and summary["counters"]["sandbox_runs"] >= 4
    problems = {p.id: p for p in CODE}  # (rows are written as problems finish)
    for row in rows:
        problem = problems[row["id"]]
        assert len(row["candidates"]) == 1 and row["answer"].startswith("def f(x):")
        assert check(row["answer"], problem.tests).passed == row["correct"]  # scored on the hidden tests
    assert summary["correct"] >= 2


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "reasoner.cli", "solve", *args], capture_output=True, text=True, timeout=300, check=False
    )


PROBLEM = "Write f(x): take x, add 3, multiply by 3."


def test_solve_shows_the_program_and_runs_the_tests_file(tmp_path):
    good = tmp_path / "good.py"
    good.write_text("assert f(1) == 12\nassert f(2) == 15\n")
    out = cli(PROBLEM, "--recipe", "toy-code", "--tests", str(good))
    assert out.returncode == 0, out.stderr
    assert "program:\ndef f(x):\n    return (x+3)*3\n" in out.stdout and f"tests ({good}): passed" in out.stdout


def test_solve_tests_failing_searched_on_and_bad_files(tmp_path, capsys):
    """In-process (the subprocess test above covers the command): a failing file, the rethink recipe searching
    on the file's tests, and clear one-line errors."""
    from reasoner.cli import main

    bad, good = tmp_path / "bad.py", tmp_path / "good.py"
    bad.write_text("assert f(1) == 13\n")
    good.write_text("assert f(1) == 12\n")
    assert main(["solve", PROBLEM, "--recipe", "toy-code", "--tests", str(bad)]) == 0
    out = capsys.readouterr().out
    assert "failed: AssertionError" in out and "assert f(1) == 13" in out
    assert main(["solve", PROBLEM, "--recipe", "toy-code-rethink", "--tests", str(good), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (
        data["tests"]["passed"]
        and data["program"].startswith("def f(x):")
        and data["stats"]["counters"]["rollouts"] >= 1
    )
    (tmp_path / "syntax.py").write_text("assert f(1) ==\n")
    for args, message in [
        (["--tests", str(tmp_path / "missing.py")], "cannot read tests file"),
        (["--tests", str(tmp_path)], "cannot read tests file"),
        (["--tests", str(tmp_path / "syntax.py")], "line 1: not valid Python"),
        (["--recipe", "toy-code-rethink"], "has no public tests"),
    ]:
        assert main(["solve", PROBLEM, *args]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
