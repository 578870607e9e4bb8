"""Programs written against the checker rather than the task: each is wrong, and the old single-interpreter
harness (the shared checker) passed it. On the safe channel each must fail, and leave nothing behind (hostile).
The shared checker's weakness is pinned too, so its documentation stays true."""

import pytest
from hostile import hostile

from verifiers.code import check

# 1. walk up the stack to the harness, take every 32-character string (the nonce) and every small int (the
# report fd), write a forged "passed" verdict with each, and leave before the tests can fail
FORGE_VERDICT = """
import json, os, sys

def f(x):
    frame = sys._getframe()
    while frame is not None:
        values = list(frame.f_locals.values())
        secrets = [v for v in values if isinstance(v, str) and len(v) == 32]
        fds = sorted({v for v in values if type(v) is int and 0 < v < 64} | set(range(1, 64)))
        for nonce in secrets or [""]:
            for fd in fds:
                try:
                    os.write(fd, ("\\n" + nonce + json.dumps({"passed": True, "reason": "passed"}) + "\\n").encode())
                except OSError:
                    pass
        frame = frame.f_back
    os._exit(0)
"""

# 2. find the tests wherever they might be (the stack, every object the garbage collector knows, stdin, other
# processes' command lines) and answer from a table of their expected values
LOOKUP_TABLE = """
import gc, os, re, sys

def _texts():
    found, frame = [], sys._getframe()
    while frame is not None:
        found += [v for v in frame.f_locals.values() if isinstance(v, str)]
        frame = frame.f_back
    for o in gc.get_objects():
        if isinstance(o, dict):
            found += [v for v in o.values() if isinstance(v, str)]
    try:
        found.append(sys.stdin.read())
    except OSError:
        pass
    for pid in os.listdir("/proc"):
        try:
            found.append(open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace"))
        except OSError:
            pass
    return found

TABLE = {}
for text in _texts():
    for call, expected in re.findall(r"assert f\\((.*?)\\) == (.+)", text):
        TABLE[call] = eval(expected)

def f(x):
    if not TABLE:
        TABLE.update((c, eval(e)) for t in _texts() for c, e in re.findall(r"assert f\\((.*?)\\) == (.+)", t))
    return TABLE.get(repr(x), 0)
"""

# 3. an answer that is equal to everything
EQUAL_TO_ANYTHING = """
class Anything:
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    __hash__ = object.__hash__

def f(x):
    return Anything()
"""

WRONG_TESTS = "assert f(3) == 17\nassert f(4) == [99, 'x']\n"  # no formula: only the tests know the answers


def test_forging_the_verdict_from_the_stack_fails():
    r = hostile(FORGE_VERDICT, WRONG_TESTS)
    # its forged lines land on the answer pipe (not JSON) or nowhere, then it exits: both fail
    assert "broke the channel" in r.reason or "before the tests finished" in r.reason


def test_answering_from_a_table_read_from_the_tests_fails():
    r = hostile(LOOKUP_TABLE, WRONG_TESTS)
    assert r.reason == "AssertionError (line 1, tests: assert f(3) == 17)"


def test_an_object_equal_to_everything_fails_as_a_non_literal():
    r = hostile(EQUAL_TO_ANYTHING, WRONG_TESTS)
    assert r.reason.startswith("f returned a non-literal object of type 'Anything'") and "channel='shared'" in r.reason


def test_a_literal_subclass_equal_to_everything_crosses_as_its_plain_value():
    r = hostile(
        """
        class Int(int):
            def __eq__(self, other):
                return True
            __hash__ = int.__hash__
        def f(x):
            return Int(0)
        """,
        WRONG_TESTS,
    )
    assert r.reason == "AssertionError (line 1, tests: assert f(3) == 17)"


def test_patching_the_builtins_and_modules_the_tests_use_reaches_nothing():
    r = hostile(
        """
        import builtins, math
        math.isclose = lambda *args, **kwargs: True
        builtins.all = lambda *args: True
        def abs(x):
            return 0
        def f(x):
            return -1.0
        """,
        "assert abs(f(1) - 2.5) < 1e-9\n",
    )
    assert r.reason.startswith("AssertionError (line 1, tests: assert abs(f(1) - 2.5) < 1e-9)"), r.reason
    for tests in ("import math\nassert math.isclose(f(1), 2.5)\n", "assert all([f(1) == 2.5])\n"):
        assert not check("import builtins, math\nmath.isclose = builtins.all = lambda *a, **k: True\n"
                         "def f(x):\n    return -1.0\n", tests, 5).passed  # fmt: skip


def test_a_test_that_catches_everything_does_not_turn_a_broken_exchange_into_a_pass():
    r = hostile(
        "def f(x):\n    return (i for i in range(x))\n",
        "try:\n    f(3)\nexcept BaseException:\n    pass\n",
    )
    assert r.reason.startswith("f returned a non-literal object of type 'generator'")
    r = hostile("import os\ndef f(x):\n    os._exit(0)\n", "try:\n    f(3)\nexcept BaseException:\n    pass\n")
    assert "before the tests finished" in r.reason


@pytest.mark.parametrize("program", [FORGE_VERDICT, LOOKUP_TABLE, EQUAL_TO_ANYTHING])
def test_the_shared_checker_is_still_fooled_as_documented(program):
    # the reason the safe channel is the default; if this starts failing, update the module docstring
    assert check(program, WRONG_TESTS, 5, channel="shared").passed
