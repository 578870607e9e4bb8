"""Run untrusted Python in a sandbox: never in the evaluating process, and nothing outlives the run.

``run_python(source, timeout_s)`` starts a small launcher (this file run as a script, stdlib only) that

- as root (CI): unshares network, PID, mount, IPC and UTS namespaces. The program sees no network (only a
  loopback that is down), only its own processes, and a private tmpfs over ``/tmp``, ``/var/tmp``,
  ``/dev/shm`` and ``/run/lock`` (the world-writable places), inside which it gets a fresh working directory;
  it runs under a uid of its own (``UID_BASE`` + the launcher's pid, no groups), so it can write nothing
  outside that tmpfs that the uid could not write anyway, cannot signal or read other processes, and its
  process limit counts only its own processes;
- as another user: tries the same in a user namespace (no uid switch: it already is unprivileged);
- where the kernel refuses namespaces (root without ``CAP_SYS_ADMIN``, user namespaces off), it runs the
  program with the limits only, in a process group of its own that the launcher kills when the run ends (as
  root also every process of the sandbox uid), and removes its working directory from ``/tmp`` (documented
  best effort for another user: a process that calls ``setsid`` could then survive);
- forks an *init* (PID 1 of the new PID namespace) that forks the program with ``setrlimit`` limits (CPU
  time, address space, processes, file size, open files, no core files) and a clean environment. When the
  program exits, is killed on the wall-clock deadline, or the launcher dies, init exits and the kernel kills
  every process left in the namespace, including ones that escaped their process group with ``setsid``.

Output is capped (the run is stopped when a stream exceeds it). The launcher reports how the program ended on
a status pipe of its own, so a program cannot fake a verdict by printing or by its exit code.

``channel=(read_fd, write_fd)`` hands the program two pipe ends as fds 3 and 4, for a conversation with a
process outside the sandbox while it runs (``verifiers.code`` calls the program's functions through them).
Every process of a run (launcher, init, program and what it starts) carries ``MARKER=<evaluator pid>`` in its
environment, so leftovers can be counted through ``/proc/*/environ`` without root (tests/hostile.py); a process
that execs with an emptied environment drops it, which hides it from the count, not from the kill.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

UID_BASE = 1_000_000  # sandbox uids: UID_BASE + launcher pid (unique while it runs; no passwd entry needed)
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = (
    0x20000,
    0x4000000,
    0x8000000,
    0x10000000,
    0x20000000,
    0x40000000,
)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = (
    1,
    2,
    4,
    8,
    32,
    4096,
    8192,
    16384,
    1 << 18,
)
PR_SET_PDEATHSIG = 1
WRITABLE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
MARKER = "REASONER_SANDBOX"  # environment variable on every process of a run; its value: the evaluator's pid
CHANNEL_FDS = (3, 4)  # where the program finds ``channel``: requests to read, answers to write


@dataclass(frozen=True)
class Limits:
    """Per-run resource limits."""

    memory_mb: int = 1024  # address space
    processes: int = 64  # processes + threads of the sandbox uid
    file_mb: int = 16  # largest file it may write
    open_files: int = 64
    output_bytes: int = 65536  # per stream; more stops the run
    tmpfs_mb: int = 64  # the private /tmp (root only)


@dataclass
class RunResult:
    """How a sandboxed run ended. ``exit_code`` is None when it was killed by a signal (``signal``)."""

    exit_code: int | None
    signal: int | None
    stdout: str
    stderr: str
    timed_out: bool
    output_exceeded: bool
    seconds: float
    isolation: list[str] = field(default_factory=list)  # what was in effect: net, pid, mount, ipc, uid

    def to_dict(self) -> dict:
        return asdict(self)


def run_python(
    source: str,
    timeout_s: float = 10.0,
    limits: Limits = Limits(),
    stdin: str = "",
    channel: tuple[int, int] | None = None,
) -> RunResult:
    """Run ``source`` with ``python -I`` in the sandbox; ``stdin`` is fed to it. ``channel``: a pipe's read end
    and another's write end, given to the program as fds 3 and 4 and closed here (so the process at their other
    ends sees EOF once the program is gone). Never raises for what the program does; raises ``ValueError`` for a
    bad timeout and ``RuntimeError`` when the sandbox itself could not start the program (a broken setup would
    otherwise read as every program failing)."""
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    channel = tuple(channel or ())
    status_r, status_w = os.pipe()
    job = {
        "source": source,
        "stdin": stdin,
        "timeout_s": timeout_s,
        "limits": asdict(limits),
        "status_fd": status_w,
        "python": os.path.realpath(sys.executable),
        "prefix": sys.base_prefix,
        "channel": channel,
        "marker": str(os.getpid()),
    }
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", os.path.abspath(__file__)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(status_w, *channel),
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", MARKER: job["marker"]},
            start_new_session=True,
        )
    finally:
        for fd in (status_w, *channel):
            os.close(fd)
    out, err, exceeded = _communicate(
        proc, json.dumps(job).encode(), limits.output_bytes, deadline=start + timeout_s + 15
    )
    proc.wait()
    with os.fdopen(status_r, "rb") as f:  # init's line (how the program ended), then the launcher's
        status = {"timed_out": True, "isolation": []}
        for line in f.read().splitlines():
            status.update(json.loads(line))
    if "setup_error" in status:  # not the program's doing: every run would fail the same way
        raise RuntimeError(
            f"the sandbox could not start the program: {status['setup_error']}"
            + (f"\n{err.decode('utf-8', 'replace')[-2000:]}" if err.strip() else "")
        )
    if "status" in status:  # the program ended by itself
        code = os.waitstatus_to_exitcode(status["status"])
        exit_code, sig = (code, None) if code >= 0 else (None, -code)
    else:  # init was killed (deadline, output cap): so was the program
        exit_code, sig = None, signal.SIGKILL
    return RunResult(
        exit_code=exit_code,
        signal=sig,
        stdout=out.decode("utf-8", "replace"),
        stderr=err.decode("utf-8", "replace"),
        timed_out=status["timed_out"],
        output_exceeded=exceeded,
        seconds=round(time.monotonic() - start, 4),
        isolation=status["isolation"],
    )


def _communicate(proc: subprocess.Popen, data: bytes, cap: int, deadline: float) -> tuple[bytes, bytes, bool]:
    """Feed stdin, collect stdout/stderr up to ``cap`` bytes each; past the cap (or the backstop deadline,
    should the launcher itself hang) the launcher is told to stop the run."""
    import selectors

    sel = selectors.DefaultSelector()
    bufs = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    for f in bufs:
        sel.register(f, selectors.EVENT_READ)
    view, exceeded, stopping = memoryview(data), False, False
    if data:
        sel.register(proc.stdin, selectors.EVENT_WRITE)
    else:
        proc.stdin.close()
    while len(sel.get_map()) > 0:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            proc.kill()
            break
        for key, _ in sel.select(min(remaining, 1.0)):
            f = key.fileobj
            if f is proc.stdin:
                try:
                    n = os.write(f.fileno(), view[:65536])
                except BrokenPipeError:
                    n = len(view)
                view = view[n:]
                if not view:
                    sel.unregister(f)
                    f.close()
                continue
            chunk = os.read(f.fileno(), 65536)
            if not chunk:
                sel.unregister(f)
                continue
            buf = bufs[f]
            room = max(0, cap - len(buf))
            buf += chunk[:room]
            if len(chunk) > room and not stopping:  # more than ``cap`` bytes (exactly ``cap`` is allowed)
                exceeded = stopping = True
                proc.send_signal(signal.SIGTERM)  # the launcher kills the whole namespace
    for f in bufs:
        f.close()
    return bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr]), exceeded


# ----------------------------------------------------------------------------------------------------------
# the launcher: runs as its own process (``python -I -S sandbox.py``), stdlib only


def _libc():
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _call(fn, *args) -> None:
    import ctypes

    if fn(*args) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def _isolate(libc, root: bool) -> list[str]:
    """Enter new namespaces; returns the isolation in effect."""
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    if root:
        try:
            _call(libc.unshare, flags)
            return ["net", "pid", "mount", "ipc", "uid"]
        except OSError:
            return ["uid"]
    uid, gid = os.getuid(), os.getgid()
    try:
        _call(libc.unshare, flags | CLONE_NEWUSER)
        for name, text in (("uid_map", f"{uid} {uid} 1"), ("setgroups", "deny"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
        return ["net", "pid", "mount", "ipc"]
    except OSError:
        return []


def _mount_private(libc, limits: dict, pid_ns: bool) -> None:
    _call(libc.mount, None, b"/", None, MS_REC | MS_PRIVATE, None)
    for d in WRITABLE_DIRS:
        if os.path.isdir(d):
            _call(
                libc.mount,
                b"tmpfs",
                d.encode(),
                b"tmpfs",
                MS_NOSUID | MS_NODEV,
                f"size={limits['tmpfs_mb']}m,mode=1777".encode(),
            )
    if pid_ns:
        _call(libc.mount, b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)


def _expose_python(libc, prefix: str) -> None:
    """Make the interpreter's installation (``prefix``) reachable by the sandbox uid when it lives under a
    private folder (pyenv under /root: mode 700): a tmpfs hides that folder, and the installation alone is
    bound back at its own path, read-only (its shared library is found by absolute path)."""
    prefix = os.path.realpath(prefix)
    parts = prefix.strip("/").split("/")
    closed = next(
        (
            "/" + "/".join(parts[: i + 1])
            for i in range(len(parts))
            if os.stat("/" + "/".join(parts[: i + 1])).st_mode & 0o005 != 0o005
        ),
        None,
    )
    if closed is None:
        return
    stage = "/tmp/.python"
    os.mkdir(stage)
    _call(libc.mount, prefix.encode(), stage.encode(), None, MS_BIND | MS_REC, None)
    _call(libc.mount, b"tmpfs", closed.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=1m,mode=755")
    os.makedirs(prefix, mode=0o755, exist_ok=True)
    _call(libc.mount, stage.encode(), prefix.encode(), None, MS_MOVE, None)
    _call(libc.mount, None, prefix.encode(), None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID, None)
    os.rmdir(stage)


def _set_limits(limits: dict, timeout_s: float, count_processes: bool) -> None:
    import resource

    cpu = int(timeout_s) + 1
    mb = 1 << 20
    for res, value in (
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_AS, limits["memory_mb"] * mb),
        (resource.RLIMIT_FSIZE, limits["file_mb"] * mb),
        (resource.RLIMIT_NOFILE, limits["open_files"]),
        (resource.RLIMIT_CORE, 0),
    ) + (((resource.RLIMIT_NPROC, limits["processes"]),) if count_processes else ()):
        resource.setrlimit(res, (value, value))


def _init(libc, job: dict, isolation: list[str], lifeline: int, uid: int | None) -> None:
    """PID 1 of the sandbox: set up the file system, start the program, reap until it ends, then exit
    (which makes the kernel kill whatever is left in the namespace). Without a PID namespace it leads a process
    group of its own instead, which the launcher kills when the run ends. A failure before the program runs is
    reported as ``setup_error`` (not as the program's exit), so ``run_python`` can raise it."""
    try:
        _call(libc.prctl, PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        import select

        if select.select([lifeline], [], [], 0)[0]:  # EOF: the launcher died before PDEATHSIG was set
            os._exit(70)
        os.close(lifeline)
        if "pid" not in isolation:
            os.setsid()  # init, the program and its children: one group the launcher can kill at once
        if "mount" in isolation:
            _mount_private(libc, job["limits"], "pid" in isolation)
            if uid is not None:
                _expose_python(libc, job["prefix"])
        workdir = job.get("workdir")  # made by the launcher when /tmp is the real one
        if workdir is None:
            import tempfile

            workdir = tempfile.mkdtemp(prefix="sandbox-")
            if uid is not None:
                os.chown(workdir, uid, uid)
        r, w = os.pipe()
        failed_r, failed_w = os.pipe()  # close-on-exec: EOF once the program runs, else why it could not
        program = os.fork()
        if program == 0:
            try:
                os.dup2(r, 0)
                for fd in (r, w, failed_r, job["status_fd"]):
                    os.close(fd)
                failed_w = _place_channel(job["channel"], failed_w)
                _set_limits(job["limits"], job["timeout_s"], count_processes=uid is not None)
                if uid is not None:
                    os.setgroups([])
                    os.setgid(uid)
                    os.setuid(uid)
                os.chdir(workdir)
                env = {
                    "PATH": "/usr/local/bin:/usr/bin:/bin",
                    "HOME": workdir,
                    "TMPDIR": workdir,
                    "LANG": "C.UTF-8",
                    "PYTHONDONTWRITEBYTECODE": "1",
                    MARKER: job["marker"],
                }
                with open(os.path.join(workdir, "main.py"), "w") as f:
                    f.write(job["source"])
                os.execve(job["python"], [job["python"], "-I", "main.py"], env)
            except BaseException as e:  # noqa: BLE001 - the program never ran: say why, for run_python to raise
                os.write(failed_w, f"{e!r} (python {job['python']})".encode()[:2000])
            finally:
                os._exit(71)
        os.close(r)
        os.close(failed_w)
        for fd in job["channel"]:  # the program's alone: its peer sees EOF when the program is gone
            os.close(fd)
        failure = b""
        while chunk := os.read(failed_r, 4096):
            failure += chunk
        os.close(failed_r)
        if failure:
            os.waitpid(program, 0)
            os.write(job["status_fd"], (json.dumps({"setup_error": failure.decode(errors="replace")}) + "\n").encode())
            os._exit(0)
        try:
            if job["stdin"]:
                os.write(w, job["stdin"].encode())
        except OSError:
            pass
        os.close(w)
        while True:  # reap everything; leave when the program is done
            pid, status = os.wait()
            if pid == program:
                break
        os.write(job["status_fd"], (json.dumps({"status": status}) + "\n").encode())
        os._exit(0)
    except BaseException as e:  # noqa: BLE001 - report and die, never return into the launcher's code
        try:
            os.write(job["status_fd"], (json.dumps({"setup_error": f"sandbox init failed: {e!r}"}) + "\n").encode())
        finally:
            os._exit(71)


def _place_channel(channel: list[int], keep: int) -> int:
    """In the program's process, before exec: move the channel's fds to ``CHANNEL_FDS`` (inherited by the program)
    without clobbering ``keep`` (init's close-on-exec error pipe), which is returned at its new number."""
    import fcntl

    keep_high = fcntl.fcntl(keep, fcntl.F_DUPFD_CLOEXEC, 100)
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in channel]
    for fd in (keep, *channel):
        os.close(fd)
    for fd, target in zip(high, CHANNEL_FDS):
        os.dup2(fd, target)  # inheritable
        os.close(fd)
    return keep_high


def _kill_leftovers(group: int, uid: int | None) -> None:
    """Without a PID namespace: kill the run's process group (init's), and as root every process of the sandbox
    uid (a process running as that uid calling kill(-1) reaches all of them, setsid or not)."""
    try:
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass
    if uid is not None:
        killer = os.fork()
        if killer == 0:
            try:
                os.setgid(uid), os.setuid(uid)
                os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
        os.waitpid(killer, 0)


def _launch() -> None:
    job = json.loads(sys.stdin.buffer.read())
    libc = _libc()
    root = os.geteuid() == 0
    uid = UID_BASE + os.getpid() if root else None
    isolation = _isolate(libc, root)
    if "mount" not in isolation:  # no private /tmp: the program's folder is made here, and removed after the run
        import tempfile

        job["workdir"] = tempfile.mkdtemp(prefix="sandbox-")
        if uid is not None:
            os.chown(job["workdir"], uid, uid)
    lifeline, alive = os.pipe()  # init sees EOF on it once the launcher is gone
    init = os.fork()
    if init == 0:
        os.close(alive)
        _init(libc, job, isolation, lifeline, uid)
    os.close(lifeline)
    for fd in job["channel"]:
        os.close(fd)
    timed_out = False

    def stop(signum, _frame):
        nonlocal timed_out
        timed_out = timed_out or signum == signal.SIGALRM
        try:
            os.kill(init, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if "pid" not in isolation:  # killing init does not kill the program: kill init's group
            try:
                os.killpg(init, signal.SIGKILL)
            except OSError:
                pass

    signal.signal(signal.SIGALRM, stop)
    signal.signal(signal.SIGTERM, stop)
    signal.setitimer(signal.ITIMER_REAL, job["timeout_s"])
    os.waitpid(init, 0)  # returns once init and, with a PID namespace, all its processes are gone
    signal.setitimer(signal.ITIMER_REAL, 0)
    if "pid" not in isolation:
        _kill_leftovers(init, uid)
    if "workdir" in job:
        import shutil

        shutil.rmtree(job["workdir"], ignore_errors=True)
    os.write(job["status_fd"], (json.dumps({"timed_out": timed_out, "isolation": isolation}) + "\n").encode())


if __name__ == "__main__":
    _launch()
