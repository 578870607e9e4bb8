"""The sandbox against hostile programs: every one contained, the evaluator alive, the verdict "failed" with a
reason, and no process or file of the check left afterwards (``hostile``: counted by the marker in their
environment, so without root too). Each attack is bounded (a fork bomb stops at a few hundred processes, a memory
bomb at 4 GB) so a broken sandbox cannot take the machine down. The attacks on the checker itself (forging the
verdict, reading the tests, objects equal to anything) are in test_checker_attacks.py."""

import os
import socket
import subprocess
import tempfile
import textwrap
from pathlib import Path

import pytest
from hostile import hostile, leftover_processes

from verifiers.code import check, check_many, extract_code
from verifiers.sandbox import UID_BASE

ROOT = os.geteuid() == 0
root_only = pytest.mark.skipif(not ROOT, reason="namespaces and the uid switch need root (CI runs as root)")


def test_a_correct_program_passes_and_a_wrong_one_fails_naming_the_test():
    ok = check("def f(x):\n    return (x+3)*2\n", "assert f(1) == 8\nassert f(0) == 6\n", 5)
    assert ok.passed and ok.reason == "passed"
    bad = check("def f(x):\n    return x*2+3\n", "assert f(1) == 5\nassert f(0) == 6\n", 5)
    assert not bad.passed and "assert f(0) == 6" in bad.reason and "AssertionError" in bad.reason


def test_infinite_loop_is_killed_at_the_deadline():
    r = hostile("while True:\n    pass\n", timeout_s=1.5)
    assert "timed out" in r.reason or "CPU time" in r.reason


def test_sleeping_forever_is_killed_at_the_deadline():
    r = hostile("import time\ntime.sleep(3600)\n", timeout_s=1.0)
    assert "timed out after 1s" in r.reason


@root_only
def test_fork_bomb_hits_the_process_limit():
    r = hostile(
        """
        import os, time
        children = 0
        for _ in range(300):
            if os.fork() == 0:
                time.sleep(30)
                os._exit(0)
            children += 1
        """,
        "assert children == 300\n",
        timeout_s=10,
    )
    assert "BlockingIOError" in r.reason or "Resource temporarily unavailable" in r.reason


def test_memory_bomb_hits_the_memory_limit():
    r = hostile(
        """
        chunks = []
        for _ in range(40):  # 4 GB at most
            chunks.append(b"x" * (100 << 20))
        """,
        "assert len(chunks) == 40\n",
        timeout_s=20,
        memory_mb=512,
    )
    assert "MemoryError" in r.reason


@root_only
def test_writing_and_deleting_outside_the_temp_dir_fails_and_leaves_no_trace():
    victim_dir = Path(tempfile.mkdtemp(prefix=".sandbox-victim-", dir=Path(__file__).parent))
    try:
        victim_dir.chmod(0o755)
        victim = victim_dir / "precious.txt"
        victim.write_text("keep me")
        victim.chmod(0o644)
        escape = Path(tempfile.gettempdir()) / f"sandbox-escape-{os.getpid()}"
        r = hostile(
            f"""
            import os
            done = []
            for action in (lambda: os.remove({str(victim)!r}),
                           lambda: open({str(victim_dir / "new.txt")!r}, "w").write("x"),
                           lambda: open({str(victim)!r}, "a").write("tampered")):
                try:
                    action()
                    done.append(True)
                except OSError:
                    done.append(False)
            open({str(escape)!r}, "w").write("escaped")  # lands in the sandbox's private /tmp
            """,
            "assert all(done), done\n",
        )
        assert "AssertionError" in r.reason and "[False, False, False]" in r.reason
        assert victim.read_text() == "keep me" and sorted(p.name for p in victim_dir.iterdir()) == ["precious.txt"]
        assert not escape.exists()
    finally:
        for p in victim_dir.iterdir():
            p.unlink()
        victim_dir.rmdir()


@root_only
def test_sockets_reach_nothing():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        r = hostile(
            f"""
            import socket
            reached = []
            for address in (("127.0.0.1", {port}), ("1.1.1.1", 53)):
                try:
                    socket.create_connection(address, timeout=2).close()
                    reached.append(address)
                except OSError as e:
                    pass
            """,
            "assert reached, 'no network'\n",
        )
        assert "no network" in r.reason
        server.settimeout(0.2)
        with pytest.raises(socket.timeout):
            server.accept()
    finally:
        server.close()


def test_killing_the_parent_and_everyone_else_does_not_reach_the_evaluator():
    if not {"pid", "uid"} & set(check("", "", 5).isolation):
        pytest.skip("without a PID namespace or a uid of its own, kill(-1) would reach this user's processes")
    sentinel = subprocess.Popen(["sleep", "600"])  # "everyone else": a process of the evaluator's user
    kills = textwrap.dedent(
        f"""
        import os, signal
        for pid in (os.getppid(), {os.getpid()}, {sentinel.pid}, 1, -1):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        """
    )
    tests = "assert f(2) == 4\nassert f(5) == 10\n"
    try:
        # tests that pass only if the kills hit nothing the check needs (judge, launcher, init, the pipes)
        right = check(kills + "def f(x):\n    return 2 * x\n", tests, 10)
        assert right.passed, right
        wrong = hostile(kills + "def f(x):\n    return x + 2\n", tests, 10)
        assert wrong.reason == "AssertionError (line 2, tests: assert f(5) == 10)"  # the tests' verdict, no crash
        assert sentinel.poll() is None
        assert leftover_processes() == []
    finally:
        sentinel.kill()
        sentinel.wait()


def test_flooding_stdout_is_stopped_at_the_output_cap():
    r = hostile("while True:\n    print('x' * 1000)\n", timeout_s=10, output_bytes=20000)
    assert "output over 20000 bytes" in r.reason
    assert len(r.stdout) <= 20000


def test_environment_secrets_are_not_visible(monkeypatch):
    monkeypatch.setenv("REASONER_TEST_SECRET", "s3cr3t-value")
    r = hostile(
        f"""
        import os
        found = [v for v in os.environ.values() if "s3cr3t" in v]
        for pid in ("1", str(os.getppid()), "{os.getpid()}", "self"):
            try:
                found += [x for x in open(f"/proc/{{pid}}/environ", "rb").read().split(b"\\0") if b"s3cr3t" in x]
            except OSError:
                pass
        print(found)
        """,
        "assert found\n",
    )
    assert "s3cr3t" not in r.stdout + r.stderr + r.reason


def test_an_orphan_that_escapes_its_process_group_does_not_outlive_the_check():
    hostile(
        """
        import os
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv("/bin/sleep", ["sleep", "987.654"])
            os._exit(0)
        def f():
            return None
        """,
        "assert f() == 42\n",
    )  # hostile() found no process of the check left, the escaped sleep included


@pytest.mark.parametrize("how", ["import sys\nsys.exit(0)\n", "import os\nos._exit(0)\n", "raise SystemExit\n"])
def test_exiting_0_before_the_tests_run_is_a_failure(how):
    r = hostile(how, "assert False\n")
    assert "before the tests finished" in r.reason


@root_only
def test_runs_as_an_unprivileged_user_in_its_own_namespaces():
    r = hostile(
        "import os\nuid = os.getuid()\npids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n",
        "assert uid == 0, (uid, pids)\n",
    )
    assert {"net", "pid", "mount", "uid"} <= set(r.isolation)
    uid, pids = eval(r.reason.split("AssertionError: ", 1)[1].split(" (line")[0])
    assert uid >= UID_BASE
    assert pids[0] == 1 and len(pids) <= 3  # only its own processes: init, itself (and a transient one)


def test_check_many_keeps_order_and_runs_each_separately():
    jobs = [(f"v = {i}\n", f"assert v == {i if i % 2 else -1}\n") for i in range(6)]
    assert [r.passed for r in check_many(jobs, timeout_s=5, workers=3)] == [False, True, False, True, False, True]


def test_extract_code_from_fenced_blocks_and_completions():
    answer = "Here it is:\n```python\ndef f(x):\n    return x + 1\n```\nand a test\n```\nprint(f(1))\n```"
    assert extract_code(answer, entry_point="f") == "def f(x):\n    return x + 1\n"
    prompt = 'from typing import List\n\ndef g(xs: List[int]) -> int:\n    """Sum."""\n'
    assert extract_code("    return sum(xs)\n", prompt, "g") == prompt + "    return sum(xs)\n"
    full = extract_code("```python\ndef g(xs):\n    return sum(xs)\n```", prompt, "g")
    assert full.startswith("from typing import List\n") and check(full, "assert g([1, 2]) == 3\n", 5).passed
    assert extract_code("") is None and extract_code("```python\n```") is None


def test_bad_timeout_is_a_clear_error():
    with pytest.raises(ValueError, match="timeout_s must be positive"):
        check("x = 1\n", "", 0)


def test_the_leftover_count_sees_a_marked_process_that_left_its_session():
    # the count behind hostile(): it must see a process of a check whatever its uid, group or session
    from hostile import sandbox_processes

    from verifiers.sandbox import MARKER

    stray = subprocess.Popen(
        ["sleep", "123.456"], env={"PATH": os.environ["PATH"], MARKER: str(os.getpid())}, start_new_session=True
    )
    try:
        assert [c for c in sandbox_processes() if "123.456" in c]
    finally:
        stray.kill()
        stray.wait()
    assert not [c for c in sandbox_processes() if "123.456" in c]
