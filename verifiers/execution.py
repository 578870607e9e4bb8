"""Execution feedback as a verifier: the fraction of a problem's *public* tests a finished program passes.

RethinkMCTS (arXiv 2409.09584) rewards a rollout with its program's pass rate on the public tests, and only
the finished rollout: thoughts before the code score 0 (so trajectories aggregate with ``last``). Programs run
in the sandbox (``verifiers.code.check``), never in this process; a program is run once however many times a
search re-scores its leaf (results are cached per program text), and the programs of one ``score_paths`` call
run in parallel (threads, each waiting on its own sandbox subprocess).

Counting: all public tests first run together in one sandbox run (the common cases, all pass or a single
test, cost one run); only when that fails and there are several test statements does each run on its own,
after the non-test statements before it (imports, setup). What failed is kept for a rethinking search
(RethinkMCTS's verbal feedback): ``outcome(node).reason`` (the first failure, one line) and ``failures``, one
``TestFailure`` per failing test (at most ``FEEDBACK_FAILURES``) with the test's line, a failed assert's expected
and actual values, the exception (type and message) and the program's line that raised it, and the tail of the
program's output, each bounded (``FEEDBACK_CHARS``, ``STDOUT_CHARS``); ``feedback()`` is their text. They come
from the checker's judge (``verifiers.code``), the trusted side, so the program can shape what it returns, raises
and prints, but not the verdict or where the feedback says it failed.

Public tests come from ``problem.meta["public_tests"]`` (toy-code, MBPP). HumanEval has none: there the
doctest examples of the prompt (``>>> call`` followed by the expected value) become asserts where both are
Python expressions (54 of the 164 problems, 99 asserts, all passed by the canonical solutions); otherwise
``ValueError`` says so. The hidden tests (``problem.tests``) are never read.
"""

from __future__ import annotations

import ast
import doctest
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from reasoner.core.types import Node, Problem

from .code import FEEDBACK_CHARS, CheckResult, check, extract_code

log = logging.getLogger(__name__)


FEEDBACK_FAILURES = 3  # failing tests a feedback text shows
STDOUT_CHARS = 300  # the tail of the program's output a failure keeps


@dataclass(frozen=True)
class TestFailure:
    """One failing public test, as the checker's judge saw it (``CheckResult.detail``), every field bounded:
    ``test`` (the test's line), ``actual`` / ``expected`` (a failed assert's compared values, reprs), ``error``
    (the exception, type and message, or why the run ended: a timeout, a crash), ``where`` (the program's line
    that raised) and ``stdout`` (the tail of what the program printed). The program wrote some of it (its
    values, messages, output), so it is data for the model to read, never something that decides a verdict."""

    __test__ = False  # not a pytest class

    test: str = ""
    actual: str | None = None
    expected: str | None = None
    error: str = ""
    where: str = ""
    stdout: str = ""

    @classmethod
    def of(cls, result: CheckResult, test: str) -> TestFailure:
        d = result.detail
        return cls(
            test=d.get("test") or (test.strip().splitlines() or [""])[-1].strip()[:FEEDBACK_CHARS],
            actual=d.get("actual"),
            expected=d.get("expected"),
            error=d.get("error") or result.reason[:FEEDBACK_CHARS],
            where=d.get("where", ""),
            stdout=result.stdout[-STDOUT_CHARS:],
        )

    def text(self) -> str:
        lines = [f"Failed test: {self.test}"]
        if self.expected is not None:
            lines += [f"Expected: {self.expected}", f"Actual: {self.actual}"]
        elif self.actual is not None:
            lines.append(f"Actual value: {self.actual}")
        if self.error and self.error != "AssertionError":
            lines.append(f"Error: {self.error}")
        if self.where:
            lines.append(f"Raised at: {self.where}")
        if self.stdout:
            lines.append(f"Program output (last {STDOUT_CHARS} characters):\n{self.stdout}")
        return "\n".join(lines)


@dataclass(frozen=True)
class ExecutionResult:
    """How a program did on the public tests: ``passed`` of ``total`` test statements, and why not (feedback)."""

    program: str | None
    passed: int
    total: int
    reason: str  # "passed", or the first failure: the failing assert, an exception, a timeout
    failures: tuple[TestFailure, ...] = ()  # the failing tests, in order (at most FEEDBACK_FAILURES)

    @property
    def score(self) -> float:
        return self.passed / self.total if self.total else 0.0

    def feedback(self) -> str:
        """The execution feedback a rethinking model reads (RethinkMCTS's verbal feedback, before its
        block-level debugging): the pass count, then each failing test with expected vs actual, the
        exception and where the program raised it, and the tail of its output."""
        if self.reason == "passed":
            return f"All {self.total} public tests pass."
        head = f"The code passes {self.passed} of {self.total} public tests."
        if not self.failures:
            return f"{head}\n{self.reason}"
        return "\n\n".join([head] + [f.text() for f in self.failures])


def public_tests(problem: Problem) -> str:
    """The public tests of ``problem``: ``meta["public_tests"]``, else the prompt's doctest examples as asserts."""
    tests = problem.meta.get("public_tests")
    if tests and tests.strip():
        return tests
    asserts = doctest_asserts(problem.meta.get("prompt") or problem.text)
    if asserts:
        return asserts
    raise ValueError(
        f"problem {problem.id or problem.text[:60]!r} has no public tests: verifier.type=tests runs "
        "problem.meta['public_tests'] "
        "(set by the toy-code and mbpp suites; `reasoner solve --tests FILE` gives them) or the prompt's doctest "
        "examples "
        "(>>> call, then the expected value), and this problem has neither"
    )


def doctest_asserts(prompt: str) -> str:
    """``assert <call> == <expected>`` for every doctest example whose call and expected value are both Python
    expressions (parsed here, never run); examples printing free text are skipped."""
    lines = []
    try:
        examples = doctest.DocTestParser().get_examples(prompt)
    except ValueError:  # malformed doctest indentation
        return ""
    for ex in examples:
        source, want = ex.source.strip(), ex.want.strip()
        if not want or "\n" in source:
            continue
        try:  # unparsed again: drops comments after the call
            call, expected = ast.unparse(ast.parse(source, mode="eval")), ast.unparse(ast.parse(want, mode="eval"))
        except SyntaxError:
            continue
        lines.append(f"assert ({call}) == ({expected})")
    return "\n".join(lines) + "\n" if lines else ""


def split_tests(tests: str) -> list[str]:
    """One runnable script per top-level ``assert`` (with the non-assert statements before it); a script without
    top-level asserts (e.g. ``def check(candidate): ...`` then ``check(f)``) is one test."""
    try:
        body = ast.parse(tests).body
    except SyntaxError:
        return [tests]
    lines = tests.splitlines()
    setup, out = [], []
    for stmt in body:
        text = "\n".join(lines[stmt.lineno - 1 : stmt.end_lineno])
        if isinstance(stmt, ast.Assert):
            out.append("\n".join(setup + [text]) + "\n")
        else:
            setup.append(text)
    return out or [tests]


class ExecutionVerifier:
    """Scores a finished trajectory by its program's public-test pass rate; unfinished paths score 0."""

    name = "tests"

    def __init__(self, timeout_s: float = 10.0, workers: int = 4):
        self.timeout_s, self.workers = timeout_s, workers
        self._cache: dict[tuple[str, str], ExecutionResult] = {}

    def program(self, node: Node) -> str | None:
        problem = node.tree.problem
        return extract_code(node.text(), problem.meta.get("prompt"), problem.meta.get("entry_point"))

    def outcome(self, node: Node) -> ExecutionResult | None:
        """The public-test result of a finished node's program (run if not yet); ``None`` for unfinished nodes."""
        if not node.terminal or node.step is None:
            return None
        tests = public_tests(node.tree.problem)
        program = self.program(node)
        if program is None:
            return ExecutionResult(None, 0, len(split_tests(tests)), "no code in the answer")
        key = (program, tests)
        if key not in self._cache:
            self._run([(node, program, tests)])
        return self._cache[key]

    def score_paths(self, nodes: Sequence[Node]) -> list[list[float]]:
        jobs, seen = [], set()
        for node in nodes:
            if node.terminal and node.step is not None and self.name not in node.step.scores:
                tests = public_tests(node.tree.problem)
                program = self.program(node)
                if program is not None and (program, tests) not in self._cache and (program, tests) not in seen:
                    seen.add((program, tests))
                    jobs.append((node, program, tests))
        self._run(jobs)
        out = []
        for node in nodes:
            scores = [0.0] * node.depth  # thoughts before the code: 0 (RethinkMCTS rewards finished rollouts only)
            result = self.outcome(node)
            if result is not None:
                node.step.scores[self.name] = result.score
                scores[-1] = result.score
            out.append(scores)
        return out

    def _run(self, jobs: list[tuple[Node, str, str]]) -> None:
        """Run each (node, program, tests) in the sandbox, in parallel; cache the results."""
        if not jobs:
            return

        def one(job: tuple[Node, str, str]) -> tuple[ExecutionResult, int]:
            _, program, tests = job
            parts = split_tests(tests)
            together = check(program, tests, self.timeout_s)
            if together.passed:
                return ExecutionResult(program, len(parts), len(parts), "passed"), 1
            if len(parts) == 1:
                return ExecutionResult(program, 0, 1, together.reason, (TestFailure.of(together, tests),)), 1
            results = [check(program, part, self.timeout_s) for part in parts]
            failures = tuple(TestFailure.of(r, part) for r, part in zip(results, parts) if not r.passed)
            passed = len(parts) - len(failures)
            if not failures:  # only together (a test's setup broke a later one): the joint run's failure
                failures = (TestFailure.of(together, tests),)
            result = ExecutionResult(program, passed, len(parts), together.reason, failures[:FEEDBACK_FAILURES])
            return result, 1 + len(parts)

        with ThreadPoolExecutor(max(1, min(self.workers, len(jobs)))) as pool:
            for (node, program, tests), (result, runs) in zip(jobs, pool.map(one, jobs)):
                self._cache[(program, tests)] = result
                node.tree.stats.count("sandbox_runs", runs)
                log.debug("public tests %d/%d: %s", result.passed, result.total, result.reason)
