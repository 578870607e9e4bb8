"""Checks shared by the hostile-program tests: the verdict is a failure with a reason, and the check left no process
and no file behind.

Processes are found by the marker every process of a check carries in its environment (``verifiers.sandbox.MARKER``
= this process's pid: the sandbox's launcher, init, the program and its children, and the judge), read from
``/proc/*/environ``; so the count needs no root and no uid of the sandbox's own, and it still sees a process that
left its process group or session (``setsid``). Files: the folders a check makes in the temp dir without a private
``/tmp`` (``sandbox-*``) and the judge's (``judge-*``)."""

from __future__ import annotations

import os
import tempfile
import textwrap
import time
from pathlib import Path

from verifiers.code import CheckResult, check
from verifiers.sandbox import MARKER, Limits


def sandbox_processes() -> list[str]:
    """Command lines of live (not zombie) processes started by this process's checks."""
    want = f"{MARKER}={os.getpid()}".encode()
    out = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if want not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            state = next(line for line in (proc / "status").read_text().splitlines() if line.startswith("State:"))
            if state.split()[1] != "Z":
                out.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except (OSError, StopIteration):
            pass
    return out


def leftover_processes(wait_s: float = 3.0) -> list[str]:
    """``sandbox_processes()`` once they are gone, or after ``wait_s`` (a SIGKILLed process takes a moment to die;
    a contained one never needs long)."""
    end = time.monotonic() + wait_s
    while (left := sandbox_processes()) and time.monotonic() < end:
        time.sleep(0.05)
    return left


def check_files() -> set[str]:
    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith(("sandbox-", "judge-"))}


def hostile(program: str, tests: str = "", timeout_s: float = 5.0, **limits) -> CheckResult:
    """Check a hostile ``program``: it must fail with a reason, and leave no process and no file."""
    before = check_files()
    result = check(textwrap.dedent(program), textwrap.dedent(tests), timeout_s, Limits(**limits))
    assert result.passed is False, result
    assert result.reason and result.reason != "passed"
    left = leftover_processes()
    assert left == [], f"processes of the check still alive: {left}"
    assert check_files() <= before, f"files of the check left in the temp dir: {check_files() - before}"
    return result
