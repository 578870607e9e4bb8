"""The toy world's code task and its model, so the code path (code extraction, sandboxed tests, pass@k)
runs end to end with a real model on a CPU.

A problem asks for a function built from a chain of operations in words; the solution builds the
expression one operation per step, then writes the function in a fenced block::

    Write f(x): take x, add 3, multiply by 2, subtract 4.

    x+3

    (x+3)*2

    (x+3)*2-4

    ```python
    def f(x):
        return (x+3)*2-4
    ```

Its tests call ``f`` on a few inputs (the first is the public one, shown to searches that use execution
feedback). Its model ``toy:code`` is trained by ``evals/toy/code.py``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..core.types import Problem

WORDS = {"+": "add {}", "-": "subtract {}", "*": "multiply by {}"}
TEST_INPUTS = (1, 0, 7, 12)


@dataclass(frozen=True)
class CodeTask:
    operations: tuple[tuple[str, int], ...]  # (operator, operand) applied left to right to x

    @property
    def expression(self) -> str:
        return self.steps_expressions()[-1]

    def steps_expressions(self) -> list[str]:
        expr, top_level_sum, out = "x", False, []
        for op, n in self.operations:
            if op == "*" and top_level_sum:
                expr = f"({expr})"
            expr, top_level_sum = f"{expr}{op}{n}", op in "+-"
            out.append(expr)
        return out

    @property
    def question(self) -> str:
        words = ", ".join(WORDS[op].format(n) for op, n in self.operations)
        return f"Write f(x): take x, {words}."

    @property
    def solution(self) -> str:
        return "\n\n".join(self.steps_expressions() + [f"```python\ndef f(x):\n    return {self.expression}\n```"])

    def value(self, x: int) -> int:
        for op, n in self.operations:
            x = x + n if op == "+" else x - n if op == "-" else x * n
        return x

    def tests(self) -> str:
        return "".join(f"assert f({x}) == {self.value(x)}\n" for x in TEST_INPUTS)

    def public_test(self) -> str:
        return f"assert f({TEST_INPUTS[0]}) == {self.value(TEST_INPUTS[0])}\n"


def generate_task(rng: random.Random, min_ops: int = 1, max_ops: int = 4) -> CodeTask:
    return CodeTask(tuple((rng.choice("+-*"), rng.randint(2, 9)) for _ in range(rng.randint(min_ops, max_ops))))


def code_problems(n: int, seed: int = 1234) -> list[Problem]:
    """The ``toy-code`` suite: ``n`` seeded tasks as problems with tests (``meta``: entry point, public test)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        t = generate_task(rng)
        out.append(
            Problem(
                t.question,
                tests=t.tests(),
                id=f"toy-code-{seed}-{i}",
                meta={"entry_point": "f", "public_tests": t.public_test()},
            )
        )
    return out
