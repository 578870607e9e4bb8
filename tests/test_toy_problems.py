import random

import pytest

from reasoner.toy import Difficulty, evaluate_expression, generate_problem, generate_problems
from reasoner.toy.problems import STEP_DELIMITER


def test_same_seed_same_problems_other_seed_other_problems():
    a = generate_problems(50, seed=3)
    assert a == generate_problems(50, seed=3)
    assert [p.question for p in a] != [p.question for p in generate_problems(50, seed=4)]


@pytest.mark.parametrize("difficulty", ["easy", "medium", "hard", "ops=4,digits=3"])
def test_answers_are_exact_and_steps_chain(difficulty):
    d = Difficulty.parse(difficulty)
    for p in generate_problems(300, seed=1, difficulty=d):
        assert evaluate_expression(p.expression) == p.answer
        assert d.min_ops <= len(p.operations) <= d.max_ops
        values = [o.result for o in p.operations]
        assert min(values) >= 0 and max(values) < 10 ** (d.digits + 1)
        for prev, op in zip(p.operations, p.operations[1:]):
            assert op.left == prev.result
        assert p.solution.split(STEP_DELIMITER)[-1] == f"The answer is \\boxed{{{p.answer}}}"


def test_solution_format_matches_the_documented_example():
    rng = random.Random(0)
    p = generate_problem(rng, Difficulty(3, 3, 2))
    assert p.question.startswith("Compute ") and p.question.endswith(".")
    assert len(p.steps) == 4 and all("=" in s for s in p.steps[:3])


def test_minimal_parentheses():
    assert evaluate_expression("((17+25)*3-48)*2+5") == 161
    for p in generate_problems(200, seed=5):
        assert "()" not in p.expression
        # a parenthesis is needed exactly when a multiplication follows an addition or subtraction
        assert p.expression.count("(") == sum(
            1 for a, b in zip(p.operations, p.operations[1:]) if b.op == "*" and a.op in "+-"
        )


@pytest.mark.parametrize("bad", ["impossible", "ops=0,digits=2", "ops=2-6,digits=9", "level=3"])
def test_bad_difficulty_is_named(bad):
    with pytest.raises(ValueError, match="difficulty"):
        Difficulty.parse(bad)


def test_evaluate_expression_rejects_garbage():
    with pytest.raises(ValueError):
        evaluate_expression("2+")
    with pytest.raises(ValueError):
        evaluate_expression("2+x")
