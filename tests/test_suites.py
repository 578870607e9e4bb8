"""Suites: loaders per schema on small files written here, HumanEval's 164 canonical solutions through our
sandbox, MBPP from JSONL, and the math round trip (extraction + math-verify) on a MATH-500-style file."""

import json

import pytest

from evals.suites import load_suite
from reasoner.recipe import SuiteConfig
from verifiers.code import check, check_many
from verifiers.math import extract_answer, is_equivalent

# MATH-500-style records: a solution ending in its own \boxed{} answer (nested braces, fractions, roots,
# intervals, tuples, degrees, text, complex numbers, polynomials, sets, matrices).
MATH = [
    (
        "Compute $\\dbinom{8}{4}$.",
        "$\\dbinom{8}{4} = \\frac{8!}{4!4!} = 70$, so the answer is $\\boxed{70}$.",
        "Counting & Probability",
    ),
    ("Simplify $\\frac{28}{6}$.", "Dividing by 2 gives $\\boxed{\\frac{14}{3}}$.", "Prealgebra"),
    ("What is $\\sqrt{50}/5$?", "$\\sqrt{50} = 5\\sqrt{2}$, so the quotient is $\\boxed{\\sqrt{2}}$.", "Algebra"),
    (
        "Convert $(0,3)$ to polar coordinates.",
        "$r = 3$ and $\\theta = \\frac{\\pi}{2}$: $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$.",
        "Precalculus",
    ),
    ("Solve $|x - 2.5| \\le 4.5$.", "So $-2 \\le x \\le 7$, i.e. $x \\in \\boxed{[-2, 7]}$.", "Algebra"),
    ("Which letter is correct?", "Only option C works, so the answer is $\\boxed{\\text{(C)}}$.", "Precalculus"),
    ("Compute $(2-i)(4+3i) - (5+15i)+ \\ldots$", "Expanding, we get $\\boxed{6 - 5i}$.", "Intermediate Algebra"),
    ("Expand $(x+2)(x+5)$.", "$x^2 + 5x + 2x + 10 = \\boxed{x^2 + 7x + 10}$.", "Algebra"),
    ("Find the angle.", "The angles sum to $180^\\circ$, so it is $\\boxed{90^\\circ}$.", "Geometry"),
    ("Find all roots of $x^3 - x$.", "$x(x-1)(x+1) = 0$ gives $\\boxed{-1, 0, 1}$.", "Intermediate Algebra"),
    ("Compute $\\frac{1}{2} + \\frac{1}{3}$.", "$\\frac{3}{6} + \\frac{2}{6} = \\boxed{\\frac{5}{6}}$.", "Prealgebra"),
    ("Find $k$.", "We need $k^2 = 12$, and $k > 0$, so $k = \\boxed{2\\sqrt{3}}$.", "Algebra"),
    ("Find the matrix.", "It is $\\boxed{\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}}$.", "Precalculus"),
    ("How many dollars?", "She pays $\\$12.50 \\cdot 4 = \\boxed{\\$50}$.", "Prealgebra"),
    ("Evaluate $\\log_2 64$.", "$2^6 = 64$, so $\\boxed{6}$.", "Algebra"),
    (
        "What is $0.\\overline{3}$ as a fraction?",
        "Let $x = 0.\\overline{3}$; then $10x - x = 3$: $\\boxed{\\frac{1}{3}}$.",
        "Number Theory",
    ),
    ("Find the domain.", "Need $x > 1$: $\\boxed{(1, \\infty)}$.", "Intermediate Algebra"),
    ("Compute $\\frac{\\sqrt{3}}{2}\\cdot 2$.", "We get $\\boxed{\\sqrt{3}}$.", "Precalculus"),
    ("Find $a+b$.", "With $a = \\frac{-1}{4}$ and $b = 2$: $\\boxed{\\frac{7}{4}}$.", "Algebra"),
    ("Compute $1000 \\cdot 0.0725$.", "That is $\\boxed{72.5}$.", "Prealgebra"),
    ("Find $x$ in terms of $y$.", "Isolating, $x = \\boxed{\\frac{y-3}{2}}$.", "Algebra"),
    ("Find the remainder of $2^{10}$ mod 7.", "$2^3 \\equiv 1$, so $2^{10} \\equiv 2$: $\\boxed{2}$.", "Number Theory"),
    ("Which are solutions?", "Both work: $\\boxed{\\{2, 3\\}}$.", "Algebra"),
    ("Give the equation of the line.", "The slope is 2, so $\\boxed{y = 2x + 1}$.", "Algebra"),
]
# the same answer written another way, as a model would
EQUIVALENT = {
    "\\frac{14}{3}": "14/3",
    "\\frac{5}{6}": "\\dfrac{5}{6}",
    "72.5": "\\frac{145}{2}",
    "\\frac{1}{3}": "1/3",
    "2\\sqrt{3}": "\\sqrt{12}",
}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_math_round_trip_on_every_line_of_a_math500_file(tmp_path):
    rows = [
        {
            "problem": p,
            "solution": s,
            "answer": extract_answer(s),
            "subject": subj,
            "level": 1 + i % 5,
            "unique_id": f"test/{i}.json",
        }
        for i, (p, s, subj) in enumerate(MATH)
    ]
    assert all(r["answer"] for r in rows)
    problems = load_suite(SuiteConfig(name="math500", data=write_jsonl(tmp_path / "math.jsonl", rows)))
    assert (
        len(problems) == len(MATH) and problems[3].id == "test/3.json" and problems[3].meta["subject"] == "Precalculus"
    )
    for p in problems:
        assert is_equivalent(extract_answer(p.meta["solution"]), p.answer), (p.meta["solution"], p.answer)
    for gold, other in EQUIVALENT.items():
        assert is_equivalent(other, gold), (other, gold)
    assert not is_equivalent("\\frac{14}{5}", "\\frac{14}{3}") and not is_equivalent("[-2, 6]", "[-2, 7]")


def test_gsm8k_and_competition_schemas(tmp_path):
    gsm = load_suite(
        SuiteConfig(
            name="gsm8k",
            data=write_jsonl(
                tmp_path / "g.jsonl",
                [{"question": "Tom has 3 boxes of 400 apples...", "answer": "3*400=1200\n#### 1,200"}],
            ),
        )
    )
    assert gsm[0].answer == "1200" and gsm[0].text.startswith("Tom")
    aime = load_suite(
        SuiteConfig(
            name="aime24",
            data=write_jsonl(tmp_path / "a.jsonl", [{"ID": "2024-I-1", "Problem": "Find m+n.", "Answer": 204}]),
        )
    )
    assert (aime[0].id, aime[0].text, aime[0].answer) == ("aime24-2024-I-1", "Find m+n.", "204")
    amc = load_suite(
        SuiteConfig(
            name="amc23",
            data=write_jsonl(
                tmp_path / "c.jsonl", [{"question": "How many?", "answer": 27.0}, {"question": "Which?", "answer": 3}]
            ),
        )
    )
    assert [p.answer for p in amc] == ["27.0", "3"] and is_equivalent("27", amc[0].answer)


def test_hub_suites_without_data_ask_for_a_file():
    with pytest.raises(ValueError, match="give --data PATH"):
        load_suite(SuiteConfig(name="math500"))


def test_duplicate_ids_are_an_error(tmp_path):
    rows = [{"problem": "a", "answer": "1", "unique_id": "x"}, {"problem": "b", "answer": "2", "unique_id": "x"}]
    with pytest.raises(ValueError, match="'x' appears twice"):
        load_suite(SuiteConfig(name="math500", data=write_jsonl(tmp_path / "d.jsonl", rows)))


def test_humaneval_canonical_solutions_pass_164_of_164_in_the_sandbox_and_broken_ones_fail():
    problems = load_suite(SuiteConfig(name="humaneval"))
    assert len(problems) == 164
    programs = [p.meta["prompt"] + p.meta["canonical_solution"] for p in problems]
    results = check_many([(prog, p.tests) for prog, p in zip(programs, problems)], timeout_s=20, workers=4)
    failed = [(p.id, r.reason) for p, r in zip(problems, results) if not r.passed]
    assert failed == []
    broken = [p.meta["prompt"] + "    return None\n" for p in problems[:3]]
    assert not any(
        r.passed for r in check_many([(b, p.tests) for b, p in zip(broken, problems[:3])], timeout_s=20, workers=3)
    )


MBPP = [
    {
        "task_id": 2,
        "text": "Write a function to find the shared elements from the given two lists.",
        "code": "def similar_elements(test_tup1, test_tup2):\n  res = tuple(set(test_tup1) & set(test_tup2))\n  return (res) ",  # noqa: E501 (MBPP as shipped)
        "test_list": [
            "assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))",
            "assert set(similar_elements((1, 2, 3, 4),(5, 4, 3, 7))) == set((3, 4))",
        ],
        "test_setup_code": "",
    },
    {
        "task_id": 3,
        "text": "Write a python function to identify non-prime numbers.",
        "code": "import math\ndef is_not_prime(n):\n    if n == 1:\n        return True\n    for i in range(2,int(math.sqrt(n))+1):\n        if n % i == 0:\n            return True\n    return False",  # noqa: E501 (MBPP as shipped)
        "test_list": [
            "assert is_not_prime(1) == True",
            "assert is_not_prime(2) == False",
            "assert is_not_prime(10) == True",
        ],
        "test_setup_code": "",
    },
]


def test_mbpp_from_jsonl_reference_code_passes_and_a_wrong_one_fails(tmp_path):
    problems = load_suite(SuiteConfig(name="mbpp", data=write_jsonl(tmp_path / "m.jsonl", MBPP)))
    assert [p.id for p in problems] == ["mbpp-2", "mbpp-3"] and problems[1].meta["entry_point"] == "is_not_prime"
    assert "assert is_not_prime(1) == True" in problems[1].text  # the prompt shows the tests (names the function)
    assert all(check(p.meta["canonical_solution"], p.tests, 10).passed for p in problems)
    assert not check("def is_not_prime(n):\n    return False\n", problems[1].tests, 10).passed


def test_toy_code_suite_has_tests_that_its_reference_solution_passes():
    import random

    from reasoner.toy.code import generate_task

    problems = load_suite(SuiteConfig(name="toy-code", size=5, seed=3))
    assert len(problems) == 5 and all(p.tests and p.meta["entry_point"] == "f" for p in problems)
    task = generate_task(random.Random(0))
    from verifiers.code import extract_code

    program = extract_code(task.solution, entry_point="f")
    assert check(program, task.tests(), 10).passed
