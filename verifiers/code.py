"""Code answers: extract the program from a model's answer and run tests against it, the program in the sandbox.

``check(program, tests, timeout_s)`` returns ``CheckResult(passed, reason)``. ``tests`` are Python statements
(asserts, or HumanEval's ``def check(candidate): ...`` and ``check(entry_point)``).

The safe channel (the default) keeps the program and the tests in different processes:

- the *program* runs in the sandbox (``verifiers.sandbox``: namespaces or a uid of its own, limits, a private
  ``/tmp``, a deadline, an output cap, every process killed at the end) under a small worker that executes it,
  then answers calls on two pipes (the sandbox's ``channel``): a function name and literal arguments in, the
  result out as a literal (``_to_wire``: None, bool, int, float, complex, str, bytes and tuples, lists, dicts,
  sets of them), or the exception it raised (type, builtin base class, message, line);
- the *tests* run in a trusted process of their own (the judge, ``_judge_main``: this module, outside the
  sandbox, with limits and the same deadline), which holds the tests and writes the verdict to a pipe only this
  process reads. The names the tests use from the program are bound to proxies: a call sends ``(name, args)`` to
  the worker and returns the decoded literal, or raises the program's exception as the same builtin class (a
  subclass named like the program's own class), so ``assertRaises``-style tests work. A program's module is
  the judge's own import of it when it is the standard module of that name; a literal value (``x = 3``) is
  copied; anything else cannot cross, and using it fails naming the shared checker.

For the feedback a rethinking search reads, the judge compiles the tests with every ``assert`` rewritten as
pytest rewrites them (``_ShowAsserts``): each side evaluated once, the same ``AssertionError`` raised, and the
compared values recorded (bounded reprs); ``CheckResult.detail`` carries them with the exception and the lines
involved. The program never holds the tests, the expected values, the verdict or its pipe, and every comparison happens
in the judge on plain values: walking the stack to forge a verdict, reading the tests to answer from a table,
returning an object whose ``__eq__`` is always true (a failure: "returned a non-literal object"), shadowing a
builtin the tests use (``abs``, ``all``: such names stay the judge's builtins) or patching ``math.isclose``
reach nothing the verdict depends on. The judge counts only an affirmative end of the tests: a program that
exits, dies, times out or breaks the exchange fails, even if a test catches the error. What the program still
sees: the arguments of its calls, and the names the tests use. Tests that call prompt-defined helpers (HumanEval's
``poly``, ``encode_cyclic``) call the program's copy of them, as before. Argument mutations do not come back.

The shared checker (``check(..., channel="shared")``, or tests whose first line is ``# checker: shared``) is the
old harness, for tests that need the program's own objects (generators, classes, closures, callables passed in):
program and tests in one sandboxed interpreter, passed when a line carrying a random nonce says the tests ran to
the end. Its weakness: the program shares that interpreter, so code written against the grader can reach the
nonce and its output fd through the stack and forge a pass, read the tests, or return objects that compare equal
to anything. Nothing switches to it by itself: a non-literal result on the safe channel is a failure whose
reason names it.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field

from .sandbox import MARKER, Limits, run_python

CHANNELS = ("safe", "shared")
_LIMITS = Limits()  # the default (a module-level instance: ruff B008)
SHARED_PRAGMA = re.compile(r"\s*#\s*checker:\s*shared\b")
MESSAGE_BYTES = 16 << 20  # the largest answer the judge reads from the program
_NO_ANSWER = "the program did not answer in time"
JUDGE_GRACE_S = 5.0  # after the deadline, how long the judge may still take to write its verdict
SHARED_HINT = (
    " (the safe checker passes only literal values between the tests and the program; tests that need the"
    " program's own objects use the shared checker: check(..., channel='shared') or a '# checker: shared' line)"
)

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
    # the first failure, as the judge saw it (safe channel): ``test`` (its line), ``error`` (type: message),
    # ``where`` (the program's line that raised), ``actual`` / ``expected`` / ``compare`` (a failed assert's
    # values, bounded reprs); empty when passed, on the shared channel, or when the run gave no verdict
    detail: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def check(
    program: str, tests: str, timeout_s: float = 10.0, limits: Limits = _LIMITS, channel: str = "safe"
) -> CheckResult:
    """Run ``program`` in the sandbox and ``tests`` against it; passed only if every test statement ran.
    ``channel``: "safe" (tests in a trusted process, calls through a literal channel) or "shared" (one
    interpreter; see the module docstring). Tests starting with ``# checker: shared`` ask for the shared one."""
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}: use one of {', '.join(CHANNELS)}")
    if channel == "shared" or SHARED_PRAGMA.match(tests):
        return _check_shared(program, tests, timeout_s, limits)
    return _check_safe(program, tests, timeout_s, limits)


def check_many(
    jobs: list[tuple[str, str]],
    timeout_s: float = 10.0,
    workers: int = 4,
    limits: Limits = _LIMITS,
    progress: bool = False,
    channel: str = "safe",
) -> list[CheckResult]:
    """``check`` every ``(program, tests)`` pair, ``workers`` sandboxes at a time, results in order."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    with ThreadPoolExecutor(max(1, workers)) as pool:
        futures = [pool.submit(check, p, t, timeout_s, limits, channel) for p, t in jobs]
        return [f.result() for f in tqdm(futures, desc="sandbox", unit="check", disable=not progress)]


def _ended_early(run, timeout_s: float, limits: Limits, stderr: str) -> str:
    """Why a run that gave no verdict ended: the deadline, the output cap, a signal, or an early exit."""
    if run.timed_out:
        return f"timed out after {timeout_s:g}s"
    if run.output_exceeded:
        return f"output over {limits.output_bytes} bytes"
    if run.signal is not None:
        if run.signal == signal.SIGXCPU:
            return "CPU time limit exceeded"
        return f"killed by {signal.Signals(run.signal).name}"
    last = stderr.splitlines()[-1] if stderr else ""
    return f"exited with code {run.exit_code} before the tests finished" + (f": {last}" if last else "")


def _check_shared(program: str, tests: str, timeout_s: float, limits: Limits) -> CheckResult:
    """The shared checker: program and tests in one sandboxed interpreter (HARNESS)."""
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
    if verdict is not None:
        return CheckResult(verdict["passed"], verdict["reason"], run.seconds, stdout, stderr, run.isolation)
    return CheckResult(False, _ended_early(run, timeout_s, limits, stderr), run.seconds, stdout, stderr, run.isolation)


def _check_safe(program: str, tests: str, timeout_s: float, limits: Limits) -> CheckResult:
    """The safe channel: the judge (a trusted process running the tests) and the worker (the program, in the
    sandbox) talk over two pipes; the verdict comes from the judge on a third pipe the sandbox never sees."""
    start = time.monotonic()
    requests_r, requests_w = os.pipe()
    answers_r, answers_w = os.pipe()
    verdict_r, verdict_w = os.pipe()
    job = {
        "tests": tests,
        "requests": requests_w,
        "answers": answers_r,
        "verdict": verdict_w,
        "deadline": start + timeout_s + 2.0,  # the sandbox's own deadline comes first and names the timeout
        "cpu_s": int(timeout_s + JUDGE_GRACE_S) + 1,
        "memory_mb": limits.memory_mb + 1024,
    }
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryFile() as log, tempfile.TemporaryDirectory(prefix="judge-") as cwd:
        try:
            judge = subprocess.Popen(
                [sys.executable, "-I", "-c", _JUDGE_BOOT, root],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                cwd=cwd,
                pass_fds=(requests_w, answers_r, verdict_w),
                env={
                    "PATH": "/usr/bin:/bin",
                    "LANG": "C.UTF-8",
                    "PYTHONDONTWRITEBYTECODE": "1",
                    MARKER: str(os.getpid()),
                },
                start_new_session=True,
            )
        except BaseException:
            for fd in (requests_r, answers_w, verdict_r):
                os.close(fd)
            raise
        finally:
            for fd in (requests_w, answers_r, verdict_w):
                os.close(fd)
        try:
            try:
                judge.stdin.write(json.dumps(job).encode())
                judge.stdin.close()
            except BrokenPipeError:
                pass
            stdin = json.dumps(program)  # ASCII: a lone surrogate in a model's answer fails to compile, not to start
            run = run_python(_worker_source(), timeout_s, limits, stdin=stdin, channel=(requests_r, answers_w))
            try:
                judge.wait(timeout=max(0.0, start + timeout_s + JUDGE_GRACE_S - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        finally:
            killed = judge.poll() is None
            if killed:
                try:
                    os.killpg(judge.pid, signal.SIGKILL)
                except OSError:
                    pass
            judge.wait()
            with os.fdopen(verdict_r, "rb") as f:
                verdict_text = f.read()
        log.seek(0)
        judge_log = log.read()[-4000:].decode("utf-8", "replace").strip()
    stdout = run.stdout.strip()[-2000:]
    stderr = run.stderr.strip()[-2000:]
    seconds = round(time.monotonic() - start, 4)

    def result(passed: bool, reason: str, detail: dict | None = None) -> CheckResult:
        err = stderr + (f"\n--- tests ---\n{judge_log[-2000:]}" if judge_log else "")
        return CheckResult(passed, reason, seconds, stdout, err.strip(), run.isolation, detail or {})

    verdict = json.loads(verdict_text) if verdict_text else None
    if verdict is not None and not verdict.get("gone"):
        return result(verdict["passed"], verdict["reason"], verdict.get("detail"))
    if verdict is None and not killed and not run.timed_out:
        if judge.returncode > 0:  # the judge failed in Python, not by the program's doing: every check would
            raise RuntimeError(f"the checker's judge process failed (exit {judge.returncode}):\n{judge_log[-2000:]}")
        if judge.returncode < 0:
            return result(False, f"the tests' process was killed by {signal.Signals(-judge.returncode).name}")
    ran_out = verdict is None and killed  # the judge wrote nothing in time
    # or it stopped waiting for an answer: closing the channel then ends the worker (EOF, or a broken pipe)
    ran_out |= verdict is not None and verdict.get("reason") == _NO_ANSWER
    if ran_out and not run.timed_out and run.signal is None and not run.output_exceeded:
        # the tests did not finish in time (slow tests, or a starved machine): a time-out, not an early exit
        return result(False, f"timed out after {timeout_s:g}s: the tests did not finish")
    return result(False, _ended_early(run, timeout_s, limits, stderr))


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


# ----------------------------------------------------------------------------------------------------------
# the wire: literal values as JSON, on both sides. JSON's own types stand for themselves (lists are lists);
# every other literal is a one-key object: {"t": tuple}, {"d": [[key, value], ...]}, {"s": set}, {"f": frozenset},
# {"b": bytes as hex}, {"c": [real, imag]}, {"i": int as hex} (ints past JSON's 4300 decimal digits).
# These functions (and the worker below) are also the worker's source, so they use nothing else of this module.

_WIRE_DEPTH = 100


class _NonLiteral(Exception):
    """A value that is no literal (its type's name is the message)."""


def _to_wire(value, depth=0):
    t = type(value)
    if value is None or t is bool or t is str:
        return value
    if depth > _WIRE_DEPTH:
        raise _NonLiteral(f"{t.__name__} nested over {_WIRE_DEPTH} deep")
    if isinstance(value, int):  # subclasses (IntEnum, ...) as the plain value; never their own methods
        value = int.__int__(value)
        return value if value.bit_length() < 4000 else {"i": hex(value)}
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, complex):
        value = complex.__complex__(value)
        return {"c": [value.real, value.imag]}
    if isinstance(value, (bytes, bytearray)):
        return {"b": bytes(value).hex()}
    if isinstance(value, list):
        return [_to_wire(v, depth + 1) for v in list.__iter__(value)]
    if isinstance(value, tuple):
        return {"t": [_to_wire(v, depth + 1) for v in tuple.__iter__(value)]}
    if isinstance(value, dict):
        return {"d": [[_to_wire(k, depth + 1), _to_wire(v, depth + 1)] for k, v in dict.items(value)]}
    if isinstance(value, frozenset):
        return {"f": [_to_wire(v, depth + 1) for v in frozenset.__iter__(value)]}
    if isinstance(value, set):
        return {"s": [_to_wire(v, depth + 1) for v in set.__iter__(value)]}
    raise _NonLiteral(t.__name__)


def _from_wire(x, depth=0):
    """Decode strictly: anything but the format above is a ``ValueError`` (the judge reads the program's
    answers with it)."""
    t = type(x)
    if x is None or t is bool or t is int or t is float or t is str:
        return x
    if depth > _WIRE_DEPTH + 1:
        raise ValueError("a value nested too deep")
    if t is list:
        return [_from_wire(v, depth + 1) for v in x]
    if t is dict and len(x) == 1:
        ((tag, v),) = x.items()
        if tag == "t" and type(v) is list:
            return tuple(_from_wire(i, depth + 1) for i in v)
        if tag == "d" and type(v) is list and all(type(kv) is list and len(kv) == 2 for kv in v):
            return {_from_wire(k, depth + 1): _from_wire(i, depth + 1) for k, i in v}
        if tag == "s" and type(v) is list:
            return {_from_wire(i, depth + 1) for i in v}
        if tag == "f" and type(v) is list:
            return frozenset(_from_wire(i, depth + 1) for i in v)
        if tag == "b" and type(v) is str:
            return bytes.fromhex(v)
        if tag == "c" and type(v) is list and len(v) == 2 and all(type(i) in (int, float) for i in v):
            return complex(v[0], v[1])
        if tag == "i" and type(v) is str and re.fullmatch(r"-?0x[0-9a-f]+", v):
            return int(v, 16)
    raise ValueError(f"not a literal on the wire: {str(x)[:80]}")


def _describe(e, source_lines):
    """The program's exception for the judge: type, the builtin class it derives from, args or message, line."""
    import builtins
    import traceback

    base = next(
        (c.__name__ for c in type(e).__mro__ if getattr(builtins, c.__name__, None) is c and issubclass(c, Exception)),
        "Exception",
    )
    try:
        message = str(e)[:1000]
    except Exception:
        message = "<unprintable>"
    out = {"type": type(e).__name__, "base": base, "message": message}
    try:
        out["args"] = _to_wire(list(e.args))
    except Exception:
        pass
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == "solution.py"]
    if frames and frames[-1].lineno and frames[-1].lineno <= len(source_lines):
        n = frames[-1].lineno
        out["where"] = f"line {n}, program: {source_lines[n - 1].strip()[:200]}"
    return out


def _worker_main():
    """The program's side, in the sandbox: run the program, then answer the judge's requests (fd 3) on fd 4
    until the judge is done (EOF). Nothing here is trusted: the program can change all of it, and gains nothing,
    since the judge decodes strictly and decides."""
    import builtins
    import json
    import os
    import sys
    import traceback

    requests, answers = 3, 4
    for fd in (requests, answers):
        os.set_inheritable(fd, False)

    def send(message):
        data = (json.dumps(message) + "\n").encode()
        while data:
            data = data[os.write(answers, data) :]

    def flush():
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass

    buffer = bytearray()

    def receive():
        while b"\n" not in buffer:
            chunk = os.read(requests, 1 << 20)
            if not chunk:
                flush()
                os._exit(0)  # the judge is done
            buffer.extend(chunk)
        i = buffer.index(b"\n")
        line = bytes(buffer[:i])
        del buffer[: i + 1]
        return json.loads(line)

    source = json.loads(sys.stdin.read())
    lines = source.splitlines()
    namespace = {"__name__": "solution", "__builtins__": builtins}
    try:
        exec(compile(source, "solution.py", "exec"), namespace)
    except SystemExit as e:
        send({"exit": str(e.code)[:100]})
        flush()
        os._exit(0)
    except BaseException as e:
        traceback.print_exc()
        send({"error": _describe(e, lines)})
        flush()
        os._exit(0)
    send({"ready": True})
    while True:
        request = receive()
        if request.get("op") == "names":
            kinds = {}
            for name in request["names"]:
                if name.startswith("__") or name not in namespace:
                    continue
                value = namespace[name]
                if type(value) is type(builtins):
                    kinds[name] = {"module": value.__name__}
                elif callable(value):
                    kinds[name] = {"call": True}
                else:
                    try:
                        kinds[name] = {"value": _to_wire(value)}
                    except (_NonLiteral, RecursionError):
                        kinds[name] = {"object": type(value).__name__}
            send({"names": kinds})
            continue
        name = request["name"]
        try:
            result = namespace[name](
                *_from_wire(request["args"]), **{k: _from_wire(v) for k, v in request["kwargs"].items()}
            )
        except SystemExit as e:
            send({"exit": str(e.code)[:100]})
            flush()
            os._exit(0)
        except BaseException as e:
            traceback.print_exc()
            send({"raise": _describe(e, lines)})
            flush()
            continue
        try:
            answer = {"ok": _to_wire(result)}
        except _NonLiteral as e:
            answer = {"nonliteral": str(e)}
        except RecursionError:
            answer = {"nonliteral": f"{type(result).__name__} that contains itself"}
        send(answer)
        flush()


_SOURCE_LOCK = threading.Lock()


def _worker_source() -> str:
    """The worker's script: the wire functions and ``_worker_main``, from this file's own source (built on first
    use: the judge, which imports this module too, never needs it), once, under a lock: code verifiers check
    programs from a thread pool."""
    with _SOURCE_LOCK:
        return _built_worker_source()


@functools.cache
def _built_worker_source() -> str:
    import inspect

    return "\n\n".join(
        ["import re", f"_WIRE_DEPTH = {_WIRE_DEPTH}", _class_source(_NonLiteral)]
        + [inspect.getsource(f) for f in (_to_wire, _from_wire, _describe, _worker_main)]
        + ["_worker_main()\n"]
    )


def _class_source(cls: type) -> str:
    """A top-level class's source, found by its ``class`` line: ``inspect.getsource`` parses the whole file with
    ``ast`` for a class (not for a function), and CPython 3.11's parser fails when another thread parses at the same
    time ("AST constructor recursion depth mismatch"; sympy's ``parse_expr`` in math-verify's thread does)."""
    import inspect

    lines = inspect.getsourcelines(sys.modules[cls.__module__])[0]
    start = next(i for i, line in enumerate(lines) if re.match(rf"class {cls.__name__}\b", line))
    return "".join(inspect.getblock(lines[start:]))


# ----------------------------------------------------------------------------------------------------------
# the judge: the trusted side, a process of its own (``python -I -c _JUDGE_BOOT <repository root>``)

_JUDGE_BOOT = "\n".join(
    ["import sys", "sys.path.insert(0, sys.argv[1])", "from verifiers.code import _judge_main", "del sys.path[0]"]
    + ["_judge_main()"]
)
_SIDE_EFFECT_MODULES = frozenset({"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo"})


class _Broken(BaseException):
    """The exchange with the program failed (it ended, timed out, returned a non-literal, broke the protocol).
    A BaseException, so a test's ``except Exception`` does not swallow it; the judge records it anyway."""

    def __init__(self, reason: str, gone: bool):
        super().__init__(reason)
        self.reason, self.gone = reason, gone


class _Program:
    """The judge's end of the channel: sends requests, reads answers (bounded, by the deadline)."""

    def __init__(self, requests: int, answers: int, deadline: float):
        self.requests, self.answers, self.deadline = requests, answers, deadline
        self.buffer, self.scanned = bytearray(), 0
        self.failure: _Broken | None = None
        self.classes: dict[tuple[str, type], type] = {}

    def broke(self, reason: str, gone: bool = False) -> _Broken:
        if self.failure is None:
            self.failure = _Broken(reason, gone)
        return self.failure

    def send(self, message: dict) -> None:
        data = (json.dumps(message) + "\n").encode()
        try:
            while data:
                data = data[os.write(self.requests, data) :]
        except OSError:
            raise self.broke("the program ended", gone=True) from None

    def receive(self) -> dict:
        import select

        while True:
            i = self.buffer.find(b"\n", self.scanned)
            if i >= 0:
                line = bytes(self.buffer[:i])
                del self.buffer[: i + 1]
                self.scanned = 0
                try:
                    message = json.loads(line)
                except (ValueError, RecursionError):
                    raise self.broke("the program broke the channel (an answer that is not JSON)") from None
                if type(message) is not dict or len(message) != 1:
                    raise self.broke("the program broke the channel (an answer that is not one message)")
                return message
            self.scanned = len(self.buffer)
            if len(self.buffer) > MESSAGE_BYTES:
                raise self.broke(f"the program's answer is over {MESSAGE_BYTES >> 20} MiB")
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self.answers], [], [], left)[0]:
                raise self.broke(_NO_ANSWER, gone=True)
            chunk = os.read(self.answers, 1 << 20)
            if not chunk:
                raise self.broke("the program ended", gone=True)
            self.buffer += chunk

    def call(self, name: str, args: tuple, kwargs: dict):
        if self.failure is not None:
            raise self.failure
        try:
            wire = {"op": "call", "name": name, "args": _to_wire(list(args)), "kwargs": {}}
            wire["kwargs"] = {k: _to_wire(v) for k, v in kwargs.items()}
        except _NonLiteral as e:
            raise self.broke(
                f"the tests pass {name} a {e}, which cannot be sent to the program" + SHARED_HINT
            ) from None
        self.send(wire)
        ((kind, body),) = self.receive().items()
        if kind == "ok":
            try:
                return _from_wire(body)
            except (ValueError, TypeError, RecursionError, MemoryError) as e:
                raise self.broke(f"{name} answered with a value that is not a literal ({str(e)[:100]})") from None
        if kind == "nonliteral":
            raise self.broke(f"{name} returned a non-literal object of type {_text(body)!r}" + SHARED_HINT)
        if kind == "raise" and type(body) is dict:
            raise self.exception(body)
        if kind == "exit":
            raise self.broke(f"exited (code {_text(body)}) before the tests finished")
        raise self.broke("the program broke the channel (an unknown answer)")

    def exception(self, info: dict) -> Exception:
        """The program's exception as one the tests can catch: its builtin class, or a subclass of it named
        like the program's class. Carries ``where`` (the program's line) for the reason."""
        import builtins

        name, base, message = _text(info.get("type")), _text(info.get("base")), _text(info.get("message"), 1000)
        cls = getattr(builtins, base, None)
        if not (isinstance(cls, type) and issubclass(cls, Exception)):
            cls = Exception
        if name != cls.__name__ and name.isidentifier():
            cls = self.classes.setdefault((name, cls), type(name, (cls,), {"__module__": "program"}))
        try:
            args = _from_wire(info["args"]) if "args" in info else [message]
            e = cls(*args) if type(args) is list else cls(message)
        except Exception:
            e = cls.__new__(cls)
            e.args = (message,)
        e.where = _text(info.get("where"), 300) if info.get("where") else None
        return e


def _text(value, limit: int = 100) -> str:
    return (value if type(value) is str else repr(value))[:limit]


def _bind(program: _Program, names: dict, wanted: list[str]) -> dict:
    """The tests' view of the program's names: proxies for callables, literal copies for values, the judge's own
    import of a standard module bound to its own name, and opaque stand-ins for the rest."""
    import importlib

    namespace = {}
    for name, kind in names.items():
        if name not in wanted or name.startswith("__") or type(kind) is not dict or len(kind) != 1:
            continue
        ((what, body),) = kind.items()
        if what == "call":
            namespace[name] = _proxy(program, name)
        elif what == "value":
            try:
                namespace[name] = _from_wire(body)
            except (ValueError, TypeError, RecursionError, MemoryError):
                namespace[name] = _opaque(program, name, "malformed value")
        elif (
            what == "module"
            and body == name
            and name in sys.stdlib_module_names
            and name not in _SIDE_EFFECT_MODULES
            and not name.startswith("_")
        ):
            namespace[name] = importlib.import_module(name)
        else:
            namespace[name] = _opaque(program, name, f"{what} {_text(body)}")
    return namespace


def _proxy(program: _Program, name: str):
    def call(*args, **kwargs):
        return program.call(name, args, kwargs)

    call.__name__ = call.__qualname__ = name
    return call


def _opaque(program: _Program, name: str, what: str):
    """Stands for a program object that cannot cross the channel: using it in any way fails, saying why."""

    def fail(*_args, **_kwargs):
        raise program.broke(f"the tests use the program's {name} ({what}), which is not a literal" + SHARED_HINT)

    methods = ("__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__bool__", "__len__", "__iter__")
    methods += ("__contains__", "__getitem__", "__call__", "__getattr__", "__hash__", "__add__", "__int__")
    return type("Opaque", (), {m: fail for m in methods})()


FEEDBACK_CHARS = 300  # the most of one value, message or line a failure's detail carries
_ASSERT_FAILED = "_judge_assert_failed"  # the tests' name for ``_assert_failed`` (never a program name: see _bind)


def _show(value) -> str:
    """A bounded ``repr`` of a value the tests computed (the program's results arrive as plain literals)."""
    import reprlib

    shower = reprlib.Repr()
    shower.maxstring, shower.maxother, shower.maxlong = FEEDBACK_CHARS, FEEDBACK_CHARS, FEEDBACK_CHARS
    shower.maxlist = shower.maxtuple = shower.maxset = shower.maxfrozenset = shower.maxdict = 20
    try:
        return shower.repr(value)[:FEEDBACK_CHARS]
    except Exception:  # noqa: BLE001 - an int past str()'s digit limit, a test object's broken __repr__
        return f"<{type(value).__name__}>"


def _assert_failed(actual, expected, swapped: bool, op: str, *message):
    """What a rewritten ``assert`` calls when it fails (``_ShowAsserts``): an ``AssertionError`` with the
    assert's own message, carrying the compared values for the feedback (``compared``)."""
    e = AssertionError(*message)
    if swapped:
        actual, expected = expected, actual
    e.compared = {"actual": _show(actual)}
    if op:
        e.compared.update(expected=_show(expected), compare=op)
    raise e


class _ShowAsserts(ast.NodeTransformer):
    """Rewrites every ``assert`` of the tests so a failure says what was compared, as pytest's assertion rewriting
    does: ``assert A == B, m`` runs as ``if not ((a := A) == (b := B)): _assert_failed(a, b, ...)``, each side
    evaluated once and in order, the raised error the same ``AssertionError(m)``; ``assert E`` records ``E``'s
    value. *actual* is the side that uses the program's names (``names``), *expected* the other (the left side
    when both or neither do). Chained comparisons are left as they are."""

    OPS = {"Eq": "==", "NotEq": "!=", "Lt": "<", "LtE": "<=", "Gt": ">", "GtE": ">=", "In": "in", "NotIn": "not in"}
    OPS.update({"Is": "is", "IsNot": "is not"})

    def __init__(self, names: set[str]):
        self.names, self.count = names, 0

    def uses_program(self, node) -> bool:
        return any(isinstance(n, ast.Name) and n.id in self.names for n in ast.walk(node))

    def visit_Assert(self, node):
        self.count += 1
        a, b = f"_judge_a{self.count}", f"_judge_b{self.count}"
        message = [node.msg] if node.msg is not None else []
        test = node.test
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and type(test.ops[0]).__name__ in self.OPS:
            left, right = test.left, test.comparators[0]
            swapped = self.uses_program(right) and not self.uses_program(left)
            check = ast.Compare(
                ast.NamedExpr(ast.Name(a, ast.Store()), left),
                test.ops,
                [ast.NamedExpr(ast.Name(b, ast.Store()), right)],
            )
            args = [ast.Name(a, ast.Load()), ast.Name(b, ast.Load()), ast.Constant(swapped)]
            args.append(ast.Constant(self.OPS[type(test.ops[0]).__name__]))
        else:
            check = ast.NamedExpr(ast.Name(a, ast.Store()), test)
            args = [ast.Name(a, ast.Load()), ast.Constant(None), ast.Constant(False), ast.Constant("")]
        call = ast.Call(ast.Name(_ASSERT_FAILED, ast.Load()), args + message, [])
        out = ast.If(ast.UnaryOp(ast.Not(), check), [ast.Expr(call)], [])
        return ast.fix_missing_locations(ast.copy_location(out, node))


def _judge_main() -> None:
    """The trusted side: read the job (tests, pipe fds, deadline) from stdin, wait for the program to be ready,
    bind the names the tests use, run the tests, write the verdict to the verdict pipe."""
    import resource

    job = json.loads(sys.stdin.buffer.read())
    mb = 1 << 20
    for res, value in (
        (resource.RLIMIT_AS, job["memory_mb"] * mb),
        (resource.RLIMIT_CPU, job["cpu_s"]),
        (resource.RLIMIT_FSIZE, 64 * mb),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(res, (value, value))
    program = _Program(job["requests"], job["answers"], job["deadline"])
    verdict = _judge(program, job["tests"])
    if program.failure is not None and verdict["passed"]:  # a test swallowed it: the exchange still failed
        verdict = {"passed": False, "reason": program.failure.reason, "gone": program.failure.gone}
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.write(job["verdict"], json.dumps(verdict).encode())
    os._exit(0)


def _judge(program: _Program, tests: str) -> dict:
    import builtins
    import traceback

    def failed(e: BaseException) -> dict:
        if isinstance(e, _Broken):
            return {"passed": False, "reason": e.reason[:1000], "gone": e.gone}
        text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        detail = {"error": text[:FEEDBACK_CHARS]}
        where = [getattr(e, "where", None)] if getattr(e, "where", None) else []
        if where:
            detail["where"] = where[0][:FEEDBACK_CHARS]
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == "tests.py"]
        if frames and frames[-1].lineno and frames[-1].lineno <= len(lines):
            n = frames[-1].lineno
            where.append(f"line {n}, tests: {lines[n - 1].strip()[:200]}")
            detail["test"] = lines[n - 1].strip()[:FEEDBACK_CHARS]
        detail.update(getattr(e, "compared", None) or {})
        reason = (text + (f" ({'; '.join(where)})" if where else ""))[:1000]
        return {"passed": False, "reason": reason, "detail": detail}

    lines = tests.splitlines()
    try:
        tree = ast.parse(tests)
        wanted = sorted(
            {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
            - set(dir(builtins))  # a program's ``abs`` or ``all`` never replaces the tests' builtins
        )
        code = compile(_ShowAsserts(set(wanted)).visit(tree), "tests.py", "exec")
    except (SyntaxError, ValueError) as e:  # ValueError: null bytes, lone surrogates
        return {"passed": False, "reason": f"the tests do not compile: {e}"}
    try:
        ((kind, body),) = program.receive().items()
        if kind == "exit":
            return {"passed": False, "reason": f"exited (code {_text(body)}) before the tests finished"}
        if kind == "error" and type(body) is dict:
            return failed(program.exception(body))
        if kind != "ready":
            raise program.broke("the program broke the channel (no ready message)")
        names = {}
        if wanted:
            program.send({"op": "names", "names": wanted})
            ((kind, names),) = program.receive().items()
            if kind != "names" or type(names) is not dict:
                raise program.broke("the program broke the channel (no names)")
        namespace = {**_bind(program, names, wanted), "__name__": "tests", "__builtins__": builtins}
        namespace[_ASSERT_FAILED] = _assert_failed
        exec(code, namespace)
    except BaseException as e:  # noqa: BLE001 - every way the tests end is a verdict
        return failed(program.failure or e)
    return {"passed": True, "reason": "passed"}
