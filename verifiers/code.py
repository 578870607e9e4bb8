"""Code answers: extract the program from a model's answer and run tests against it in the sandbox.

``check(program, tests, timeout_s)`` runs ``program`` then ``tests`` (Python statements, e.g. asserts or
HumanEval's ``check(candidate)`` call) in one fresh sandboxed interpreter (``verifiers.sandbox``) and
returns ``CheckResult(passed, reason)``. A program passes only when a harness line carrying a random
nonce reports that the tests ran to the end, so exiting early (``sys.exit(0)``, ``os._exit(0)``) before
them is a failure, not a pass. (The nonce lives in the harness's memory, which the program shares: code
written to defeat this particular grader could find it; the sandbox still contains what it can do.)
"""

from __future__ import annotations

import json
import re
import secrets
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from .sandbox import Limits, run_python

HARNESS = r"""
import json, os, sys, traceback

def _harness():
    nonce = sys.stdin.readline().strip()
    job = json.loads(sys.stdin.read())
    report = os.dup(1)
    source = job["program"] + "\n" + job["tests"] + "\n"
    lines = source.splitlines()
    verdict = {"passed": True, "reason": "passed"}
    try:
        exec(compile(source, "solution.py", "exec"), {"__name__": "solution", "__builtins__": __builtins__})
    except SystemExit as e:
        verdict = {"passed": False, "reason": f"exited (code {e.code}) before the tests finished"}
    except BaseException as e:
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == "solution.py"]
        text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        if frames and frames[-1].lineno and frames[-1].lineno <= len(lines):
            n = frames[-1].lineno
            text += f" (line {n}, {'tests' if n > job['program_lines'] else 'program'}: {lines[n - 1].strip()[:200]})"
        verdict = {"passed": False, "reason": text[:500]}
        traceback.print_exc()
    try:
        sys.stdout.flush()
    except BaseException:
        pass
    os.write(report, ("\n" + nonce + json.dumps(verdict) + "\n").encode())

_harness()
"""


@dataclass
class CheckResult:
    passed: bool
    reason: str  # "passed", or why not: the failing test, an exception, a timeout, a limit
    seconds: float = 0.0
    stdout: str = ""  # the program's output (capped; tail)
    stderr: str = ""
    isolation: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def check(program: str, tests: str, timeout_s: float = 10.0, limits: Limits = Limits()) -> CheckResult:
    """Run ``program`` and then ``tests`` in the sandbox; passed only if every test statement ran."""
    nonce = secrets.token_hex(16)
    job = {"program": program, "tests": tests, "program_lines": program.count("\n") + 1}
    run = run_python(HARNESS, timeout_s, limits, stdin=nonce + "\n" + json.dumps(job))
    verdict, output = None, []
    for line in run.stdout.splitlines():
        if line.startswith(nonce):
            verdict = json.loads(line[len(nonce) :])
        else:
            output.append(line)
    stdout = "\n".join(output).strip()[-2000:]
    stderr = run.stderr.strip()[-2000:]

    def result(passed: bool, reason: str) -> CheckResult:
        return CheckResult(passed, reason, run.seconds, stdout, stderr, run.isolation)

    if verdict is not None:
        return result(verdict["passed"], verdict["reason"])
    if run.timed_out:
        return result(False, f"timed out after {timeout_s:g}s")
    if run.output_exceeded:
        return result(False, f"output over {limits.output_bytes} bytes")
    if run.signal is not None:
        if run.signal == signal.SIGXCPU:
            return result(False, "CPU time limit exceeded")
        return result(False, f"killed by {signal.Signals(run.signal).name}")
    last = stderr.splitlines()[-1] if stderr else ""
    return result(False, f"exited with code {run.exit_code} before the tests finished" + (f": {last}" if last else ""))


def check_many(
    jobs: list[tuple[str, str]],
    timeout_s: float = 10.0,
    workers: int = 4,
    limits: Limits = Limits(),
    progress: bool = False,
) -> list[CheckResult]:
    """``check`` every ``(program, tests)`` pair, ``workers`` sandboxes at a time, results in order."""
    from tqdm.auto import tqdm

    with ThreadPoolExecutor(max(1, workers)) as pool:
        futures = [pool.submit(check, p, t, timeout_s, limits) for p, t in jobs]
        return [f.result() for f in tqdm(futures, desc="sandbox", unit="check", disable=not progress)]


_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(?:```|\Z)", re.S)


def extract_code(text: str | None, prompt: str | None = None, entry_point: str | None = None) -> str | None:
    """The program in a model's answer: the last fenced block (preferring Python blocks, and one that
    defines ``entry_point`` when given), else the whole text. A function *completion* (the body that
    continues ``prompt``, HumanEval style) is joined to the prompt; a full definition gets the prompt's
    import lines. ``None`` when there is no code at all."""
    if not text or not text.strip():
        return None
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    if blocks:
        python = [b for lang, b in blocks if lang in ("python", "py", "python3", "")] or [b for _, b in blocks]
        defining = [b for b in python if entry_point and re.search(rf"\bdef\s+{re.escape(entry_point)}\s*\(", b)]
        code = (defining or python)[-1]
    else:
        code = text
    code = code.strip("\n")
    if not code.strip():
        return None
    if prompt and entry_point and not re.search(rf"\bdef\s+{re.escape(entry_point)}\s*\(", code):
        return (prompt if code.startswith((" ", "\t")) else prompt + "\n") + code + "\n"
    if prompt:
        imports = [
            line for line in prompt.splitlines() if re.match(r"\s*(import|from)\s+\w", line) and line not in code
        ]
        if imports:
            code = "\n".join(imports) + "\n" + code
    return code + "\n"
