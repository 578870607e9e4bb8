"""The safe channel keeps what honest tests need: literal values of every kind round-trip exactly, floats compare
with tolerances, the program's exceptions are catchable as their builtin classes, its output is kept, its
module-level values and imports are there; and where tests need the program's own objects, the failure names
the shared checker, which then passes them. (HumanEval's 164 canonical solutions: test_suites.py.)"""

import pytest

from verifiers.code import _from_wire, _to_wire, check

VALUES = [
    None,
    True,
    0,
    -7,
    3**10000,  # 4772 decimal digits: past the 4300 that int(str) and JSON take
    1.5,
    -0.0,
    float("inf"),
    'naïve\n"quoted" \ud800',
    b"\x00\xffbytes",
    2 - 3j,
    (1, (2.0, "x"), ()),
    [[], [1, [2]]],
    {"a": 1, (1, 2): [None], 3: {"nested": {4}}},
    {1, "two", (3,)},
    frozenset({1, 2}),
    set(),
]


@pytest.mark.parametrize("value", VALUES, ids=[type(v).__name__ + str(i) for i, v in enumerate(VALUES)])
def test_the_wire_round_trips_literals_with_their_types(value):
    back = _from_wire(_to_wire(value))
    assert back == value and type(back) is type(value)
    if isinstance(value, float):
        assert str(back) == str(value)  # -0.0 stays negative


def test_the_wire_rejects_what_is_not_a_literal():
    with pytest.raises(ValueError):
        _from_wire({"x": 1})
    with pytest.raises(ValueError):
        _from_wire({"t": [1], "s": [2]})
    with pytest.raises(ValueError):
        _from_wire({"i": "__import__('os')"})


def test_every_kind_of_literal_comes_back_from_the_program():
    values = [v for v in VALUES if not (type(v) is int and v > 10**4300)]  # a big int: next test (repr cannot)
    program = f"inf = float('inf')\nVALUES = {values!r}\ndef f(i):\n    return VALUES[i]\n"
    tests = "inf = float('inf')\n" + "".join(
        f"assert f({i}) == {v!r} and type(f({i})) is type({v!r})\n" for i, v in enumerate(values)
    )
    tests += "assert f(0) is None and f(1) is True and str(f(5)) == '-0.0'\n"
    r = check(program, tests, 20)
    assert r.passed, r
    assert not check(program.replace("(1, (2.0, 'x'), ())", "[1, [2.0, 'x'], []]"), tests, 20).passed


def test_a_big_int_and_a_nan_cross():
    r = check(
        "import math\ndef f(n):\n    return 3 ** n\ndef g():\n    return math.nan\n",
        "import math\nassert f(10000) == 3 ** 10000\nassert math.isnan(g())\n",
        10,
    )
    assert r.passed, r


def test_floats_compare_with_tolerances_using_the_programs_imports():
    program = "import math\ndef area(r):\n    return math.pi * r * r\ndef mean(xs):\n    return sum(xs) / len(xs)\n"
    tests = (
        "assert math.isclose(area(2), 12.566370614359172, rel_tol=1e-9)\n"  # math: the program's import, as MBPP's
        "assert abs(mean([0.1, 0.2]) - 0.15) < 1e-12\n"
    )
    assert check(program, tests, 10).passed
    assert not check(program.replace("math.pi", "3.14"), tests, 10).passed


def test_exceptions_are_caught_as_their_builtin_classes():
    program = """
class NegativeError(ValueError):
    pass

def root(x):
    if x < 0:
        raise NegativeError(f"negative: {x}")
    return x ** 0.5

def look(d, k):
    return d[k]
"""
    tests = """
try:
    root(-4)
    raise AssertionError("no error")
except ValueError as e:
    assert "negative: -4" in str(e) and type(e).__name__ == "NegativeError"
try:
    look({"a": 1}, "b")
except KeyError as e:
    assert e.args == ("b",)
assert root(9) == 3.0
"""
    assert check(program, tests, 10).passed
    r = check(program.replace("raise NegativeError", "return -1 or NegativeError"), tests, 10)
    assert not r.passed and "no error" in r.reason


def test_an_uncaught_exception_names_the_programs_line_and_the_tests_line():
    r = check("def f(x):\n    return 1 / x\n", "assert f(1) == 1\nassert f(0) == 0\n", 10)
    assert (
        r.reason
        == "ZeroDivisionError: division by zero (line 2, program: return 1 / x; line 2, tests: assert f(0) == 0)"
    )


def test_output_module_values_keywords_and_humaneval_style_checks():
    program = """
import math
LIMIT = {"max": 3}
def helper(x):
    return x + 1
def solve(xs, scale=1):
    print("solving", xs)
    return tuple(helper(x) * scale for x in xs if x < LIMIT["max"])
"""
    tests = """
def check(candidate):
    assert candidate([1, 2, 5]) == (2, 3)
    assert candidate([0], scale=10) == (10,)
    assert helper(1) == 2 and LIMIT == {"max": 3} and math.sqrt(4) == 2
check(solve)
"""
    r = check(program, tests, 10)
    assert r.passed, r
    assert "solving [1, 2, 5]" in r.stdout and "solving [0]" in r.stdout


def test_the_tests_arguments_are_copies():
    r = check("def f(xs):\n    xs.append(9)\n    return len(xs)\n", "xs = [1]\nassert f(xs) == 2 and xs == [1]\n", 10)
    assert r.passed, r


@pytest.mark.parametrize(
    "program, tests, why",
    [
        ("def f(n):\n    return (i for i in range(n))\n", "assert list(f(3)) == [0, 1, 2]\n", "non-literal"),
        ("def f(g):\n    return g(2)\n", "assert f(lambda x: x + 1) == 3\n", "pass f a function"),
        ("class Box:\n    def __init__(self, v):\n        self.v = v\n", "assert Box(3).v == 3\n", "non-literal"),
        ("import re\nPATTERN = re.compile('a+')\n", "assert PATTERN.match('aa')\n", "not a literal"),
    ],
)
def test_tests_that_need_the_programs_objects_fail_naming_the_shared_checker_which_passes_them(program, tests, why):
    safe = check(program, tests, 10)
    assert not safe.passed and why in safe.reason and "channel='shared'" in safe.reason, safe.reason
    assert check(program, tests, 10, channel="shared").passed
    assert check(program, "# checker: shared\n" + tests, 10).passed


def test_an_unknown_channel_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown channel 'fast'"):
        check("x = 1\n", "", 5, channel="fast")


@pytest.mark.parametrize(
    "program, tests",
    [
        ("def f():\n    while True:\n        pass\n", "assert f() == 1\n"),  # the program's call never returns
        ("def f():\n    return 1\n", "while f() == 1:\n    pass\n"),  # the tests never end
    ],
)
def test_a_call_or_tests_that_never_end_time_out(program, tests):
    r = check(program, tests, 1.5)
    assert not r.passed and r.reason in ("timed out after 1.5s", "CPU time limit exceeded"), r.reason
    assert r.seconds < 1.5 + 10


def test_a_judge_that_gives_up_waiting_reports_a_time_out_not_an_early_exit(monkeypatch):
    """On a starved machine the judge's deadline can pass while the program still runs; the judge then closes the
    channel and the program's process exits 0. That is a time-out, not the program ending early."""
    import time as real_time
    import types

    import verifiers.code as code

    late = types.SimpleNamespace(monotonic=lambda: real_time.monotonic() - 8)  # the judge's deadline already passed
    monkeypatch.setattr(code, "time", late)
    r = check("def f():\n    return 1\n", "assert f() == 1\n", 3)
    assert not r.passed and r.reason == "timed out after 3s: the tests did not finish", r.reason


def test_a_judge_that_cannot_run_raises_instead_of_failing_every_program(monkeypatch):
    import verifiers.code

    monkeypatch.setattr(verifiers.code, "_JUDGE_BOOT", "raise SystemExit('no judge here')")
    with pytest.raises(RuntimeError, match="no judge here"):
        check("def f():\n    return 1\n", "assert f() == 1\n", 5)


def test_broken_source_is_a_verdict_not_a_crash():
    assert check("def f(:\n", "assert f() == 1\n", 5).reason == "SyntaxError: invalid syntax (solution.py, line 1)"
    surrogate = check('x = "\ud800"\n', "assert len(x) == 1\n", 5)  # a lone surrogate, as a model's answer can hold
    assert not surrogate.passed and "surrogates not allowed" in surrogate.reason
    assert "the tests do not compile" in check("x = 1\n", 'assert x == "\ud800"\n', 5).reason


def test_the_workers_script_is_built_without_parsing_a_file(monkeypatch):
    """``inspect.getsource`` of a class parses the whole file with ``ast``, and CPython 3.11's parser fails when
    another thread parses at once (seen as "AST constructor recursion depth mismatch" in a code verifier's thread
    while math-verify parsed in another): the worker's script must come without a parse."""
    import ast

    import verifiers.code as code

    code._built_worker_source.cache_clear()
    parses, parse = [], ast.parse
    monkeypatch.setattr(ast, "parse", lambda *a, **k: parses.append(a) or parse(*a, **k))
    source = code._worker_source()
    monkeypatch.undo()
    assert parses == [] and "class _NonLiteral" in source and source.rstrip().endswith("_worker_main()")
    compile(source, "worker", "exec")
