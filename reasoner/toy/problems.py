"""The toy world's task: step-wise arithmetic with exact answers.

A problem is a left-to-right chain of ``+ - *`` with minimal parentheses, e.g.
``Compute ((17+25)*3-48)*2+5.``; its solution writes one operation per step, steps separated by a
blank line, and ends with ``The answer is \\boxed{173}``::

    17+25=42

    42*3=126

    126-48=78

    78*2=156

    156+5=161

    The answer is \\boxed{161}

Values never go negative (a subtrahend is at most the running value), multipliers have one digit,
and with ``digits=d`` operands stay below ``10**d`` and every value below ``10**(d+1)``.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

STEP_DELIMITER = "\n\n"
ANSWER_TEMPLATE = "The answer is \\boxed{{{}}}"


@dataclass(frozen=True)
class Difficulty:
    """How hard a toy problem is: a range of operation counts and the operand size."""

    min_ops: int = 2
    max_ops: int = 6
    digits: int = 2

    def __post_init__(self):
        if not 1 <= self.min_ops <= self.max_ops <= 12:
            raise ValueError(f"difficulty needs 1 <= min_ops <= max_ops <= 12, got ops={self.min_ops}-{self.max_ops}")
        if not 1 <= self.digits <= 4:
            raise ValueError(f"difficulty needs 1 <= digits <= 4, got digits={self.digits}")

    @classmethod
    def parse(cls, spec: str | Difficulty) -> Difficulty:
        """``easy`` / ``medium`` / ``hard`` or ``ops=2-6,digits=2`` (``ops=4`` means exactly four)."""
        if isinstance(spec, Difficulty):
            return spec
        text = str(spec).strip().lower()
        if text in PRESETS:
            return PRESETS[text]
        fields: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            if not sep or key.strip() not in ("ops", "digits"):
                raise ValueError(
                    f"unknown difficulty {spec!r}: use one of {sorted(PRESETS)} or 'ops=MIN-MAX,digits=D' (e.g. "
                    "'ops=2-6,digits=2')"
                )
            fields[key.strip()] = value.strip()
        try:
            lo, _, hi = fields.get("ops", "2-6").partition("-")
            return cls(int(lo), int(hi or lo), int(fields.get("digits", "2")))
        except ValueError as e:
            raise ValueError(f"bad difficulty {spec!r}: {e}") from None

    def __str__(self) -> str:
        ops = f"{self.min_ops}" if self.min_ops == self.max_ops else f"{self.min_ops}-{self.max_ops}"
        return f"ops={ops},digits={self.digits}"


PRESETS = {
    "easy": Difficulty(1, 3, 1),
    "medium": Difficulty(2, 6, 2),
    "default": Difficulty(2, 6, 2),
    "hard": Difficulty(5, 7, 2),
}
DEFAULT_DIFFICULTY = PRESETS["medium"]


@dataclass(frozen=True)
class Operation:
    left: int
    op: str
    right: int

    @property
    def result(self) -> int:
        return apply(self.left, self.op, self.right)

    def step(self) -> str:
        return f"{self.left}{self.op}{self.right}={self.result}"


@dataclass(frozen=True)
class ToyProblem:
    """One arithmetic chain: ``question`` is the user's text, ``steps`` the reference solution's steps."""

    expression: str
    operations: tuple[Operation, ...]

    @property
    def question(self) -> str:
        return f"Compute {self.expression}."

    @property
    def answer(self) -> int:
        return self.operations[-1].result

    @property
    def steps(self) -> list[str]:
        return [o.step() for o in self.operations] + [ANSWER_TEMPLATE.format(self.answer)]

    @property
    def solution(self) -> str:
        return STEP_DELIMITER.join(self.steps)


def apply(left: int, op: str, right: int) -> int:
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    raise ValueError(f"unknown operator {op!r}")


def generate_problem(
    rng: random.Random, difficulty: Difficulty = DEFAULT_DIFFICULTY, n_ops: int | None = None
) -> ToyProblem:
    """Draw one problem; ``n_ops`` overrides the difficulty's range."""
    n = n_ops if n_ops is not None else rng.randint(difficulty.min_ops, difficulty.max_ops)
    top = 10**difficulty.digits - 1  # largest operand
    cap = 10 ** (difficulty.digits + 1) - 1  # largest value
    value = rng.randint(2, top)
    expr, last_op = str(value), None
    ops: list[Operation] = []
    for _ in range(n):
        choices = ["+", "-", "*"]
        if value * 2 > cap:
            choices.remove("*")
        if value < 2:
            choices.remove("-")
        if value + 1 > cap:
            choices.remove("+")
        op = rng.choice(choices)
        if op == "+":
            right = rng.randint(1, min(top, cap - value))
        elif op == "-":
            right = rng.randint(1, min(top, value - 1))
        else:
            right = rng.randint(2, min(9, cap // value))
        if op == "*" and last_op in ("+", "-"):
            expr = f"({expr})"
        expr = f"{expr}{op}{right}"
        ops.append(Operation(value, op, right))
        value, last_op = apply(value, op, right), op
    return ToyProblem(expr, tuple(ops))


def generate_problems(n: int, seed: int = 0, difficulty: Difficulty | str = DEFAULT_DIFFICULTY) -> list[ToyProblem]:
    """``n`` problems from a fixed seed: the same arguments always give the same list."""
    rng = random.Random(seed)
    difficulty = Difficulty.parse(difficulty)
    return [generate_problem(rng, difficulty) for _ in range(n)]


_TOKEN = re.compile(r"\d+|[-+*()]")


def evaluate_expression(text: str) -> int:
    """Exact value of a ``+ - *`` expression with parentheses (the toy world's ground truth for any input)."""
    tokens = _TOKEN.findall(text)
    if "".join(tokens) != re.sub(r"\s+", "", text):
        raise ValueError(f"not a toy arithmetic expression: {text!r}")
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def take():
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def atom():
        tok = take() if peek() is not None else None
        if tok == "(":
            v = expr()
            if take() != ")":
                raise ValueError(f"unbalanced parentheses in {text!r}")
            return v
        if tok is None or not tok.isdigit():
            raise ValueError(f"expected a number in {text!r}")
        return int(tok)

    def term():
        v = atom()
        while peek() == "*":
            take()
            v *= atom()
        return v

    def expr():
        v = term()
        while peek() in ("+", "-"):
            v = apply(v, take(), term())
        return v

    value = expr()
    if pos != len(tokens):
        raise ValueError(f"trailing input in {text!r}")
    return value
