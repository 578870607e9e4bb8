"""The sandbox at its edges: the output cap allows exactly ``output_bytes``; without namespaces (root without
CAP_SYS_ADMIN, e.g. an unprivileged container) a program is still killed at its deadline with everything it
started, its working directory is removed, and a sandbox that cannot start programs raises instead of reporting
every program as failed.

The no-namespace tests run the launcher under ``setpriv --bounding-set -sys_admin`` (the kernel then refuses
``unshare``) with the system Python, whose standard library is all the launcher needs."""

import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from verifiers.sandbox import MARKER, Limits, run_python

SANDBOX = Path(__file__).resolve().parent.parent / "verifiers" / "sandbox.py"
SYSTEM_PYTHON = "/usr/bin/python3"


def test_output_of_exactly_the_cap_is_kept_and_one_byte_more_is_stopped():
    exact = run_python("import sys\nprint('x' * 100, end='')\nsys.exit(3)\n", 10, Limits(output_bytes=100))
    assert (exact.output_exceeded, exact.exit_code, exact.stdout) == (False, 3, "x" * 100)
    over = run_python("print('x' * 101, end='')\n", 10, Limits(output_bytes=100))
    assert over.output_exceeded and over.stdout == "x" * 100


def without_namespaces(python: str, script: str, timeout: float = 60) -> dict:
    """Run ``script`` (which prints one JSON line) with ``python`` as root without CAP_SYS_ADMIN."""
    if os.geteuid() != 0 or not shutil.which("setpriv") or not Path(python).exists():
        pytest.skip("needs root, setpriv and a system python")
    code = f"import sys, json\nsys.path.insert(0, {str(SANDBOX.parent)!r})\nimport sandbox\n" + textwrap.dedent(script)
    proc = subprocess.run(
        ["setpriv", "--bounding-set", "-sys_admin", python, "-I", "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0 and "setpriv" in proc.stderr:
        pytest.skip(f"setpriv cannot drop CAP_SYS_ADMIN here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def alive_sandbox_pids(pids) -> list[int]:
    """Those of ``pids`` still alive (not zombies) and still processes of a sandbox run: they carry its marker
    (checked rather than the sandbox uid, so the test does not depend on the uid switch)."""
    out = []
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        state = next(line for line in status.splitlines() if line.startswith("State:")).split()[1]
        if state != "Z" and any(v.startswith(f"{MARKER}=".encode()) for v in environ):
            out.append(pid)
    return out


def test_without_namespaces_the_deadline_kills_the_program_and_its_escaped_child_and_removes_its_folder():
    program = textwrap.dedent(
        """
        import os, time
        child = os.fork()
        if child == 0:
            os.setsid()  # leave the program's process group
            time.sleep(3600)
            os._exit(0)
        print(os.getcwd(), os.getpid(), child, flush=True)
        time.sleep(3600)
        """
    )
    got = without_namespaces(
        SYSTEM_PYTHON, f"r = sandbox.run_python({program!r}, 1.0)\nprint(json.dumps(r.to_dict()))\n"
    )
    if "pid" in got["isolation"]:
        pytest.skip("the kernel granted namespaces anyway")
    cwd, pid, child = got["stdout"].split()
    assert alive_sandbox_pids([int(pid), int(child)]) == []
    assert got["timed_out"] and got["seconds"] < 10  # was: the 15 s backstop, with the program still asleep
    assert not Path(cwd).exists()  # was: left in /tmp with main.py


def test_without_namespaces_a_finished_program_leaves_no_process_and_no_folder():
    program = (
        "import os, time\nif os.fork() == 0:\n    time.sleep(3600)\n    os._exit(0)\nprint(os.getcwd(), flush=True)\n"
    )
    got = without_namespaces(
        SYSTEM_PYTHON, f"r = sandbox.run_python({program!r}, 5.0)\nprint(json.dumps(r.to_dict()))\n"
    )
    assert got["exit_code"] == 0 and not got["timed_out"] and got["seconds"] < 10
    assert not Path(got["stdout"].strip()).exists()


def test_a_sandbox_that_cannot_start_the_program_raises_naming_the_cause(tmp_path):
    # an interpreter the sandbox uid cannot reach (like a pyenv under /root) and no mount namespace to expose it
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    python = private / "python3"
    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip("needs a system python")
    shutil.copy2(os.path.realpath(SYSTEM_PYTHON), python)
    got = without_namespaces(
        str(python),
        """
        try:
            r = sandbox.run_python("print('hi')", 5.0)
            print(json.dumps({"result": r.to_dict()}))
        except RuntimeError as e:
            print(json.dumps({"error": str(e)}))
        """,
    )
    # was: RunResult(exit_code=71, ...), which code checks report as the program failing
    assert "error" in got, got
    assert (
        "could not start the program" in got["error"]
        and "PermissionError" in got["error"]
        and str(python) in got["error"]
    )
