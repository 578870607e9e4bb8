"""``reasoner serve`` (evals/serve.py): a real server process on loopback with the toy recipes, driven by the
``openai`` client (and raw HTTP for what the client cannot send)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")
try:  # the openai client's HTTP library: httpx2 (openai >= 3), httpx before
    import httpx2 as httpx
except ImportError:
    httpx = pytest.importorskip("httpx")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from reasoner.toy import generate_problems  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROBLEM = "Compute ((17+25)*3-48)*2+5."  # 161
HARD = "Compute (77*4-78-81)*2*2."  # 596 in 6 steps
LONG = {"search": {"method": "best_of_n", "n": 64}}  # with HARD, seconds of work for the toy model: time to interrupt


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(*args: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.Popen(
        [sys.executable, "-m", "reasoner", "serve", "--port", str(port), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}: {proc.stderr.read()}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not start")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    for stream in (proc.stdout, proc.stderr):
        stream.close()


@pytest.fixture(scope="module")
def server():
    classes = ("--slo-class", "loose=1e6", "--slo-class", "eager=1e6:0", "--slo-class", "strict=1e6:10")
    proc, url = _start("--recipe", "toy-cot", "--recipe", "recipes/toy-specreason.yaml", *classes)
    yield url
    _stop(proc)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="none", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def tokens(toy_target, template):
    """(completion tokens of a text, prompt tokens of a problem) by the toy target's tokenizer."""
    count = lambda text: len(toy_target.encode(text))
    return count, lambda problem: count(template.prompt(toy_target.tokenizer, problem))


def _metric(url: str, name: str, **labels) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    text = httpx.get(url + "/metrics").text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def _wait_for(predicate, seconds: float = 30) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


# -- the API -----------------------------------------------------------------------------------------------------


def test_models_and_health(server, client):
    assert sorted(m.id for m in client.models.list()) == ["toy-cot", "toy-specreason"]
    assert httpx.get(server + "/health").json()["status"] == "ok"
    assert client.models.retrieve("toy-cot").id == "toy-cot"


def test_chat(client, tokens):
    count, prompt_count = tokens
    r = client.chat.completions.create(model="toy-cot", messages=[{"role": "user", "content": PROBLEM}])
    choice = r.choices[0]
    content = choice.message.content
    assert content.endswith("\\boxed{161}") and choice.finish_reason == "stop"
    ext = choice.model_extra["reasoner"]
    assert ext["answer"] == "161"
    assert "\n\n".join(s["text"] for s in ext["steps"]) == content
    assert {s["model"] for s in ext["steps"]} == {"target"}
    assert r.usage.completion_tokens == count(content)
    assert r.usage.prompt_tokens == prompt_count(PROBLEM)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    cost = r.model_extra["reasoner"]["cost"]["roles"]["target"]
    assert cost["generated_tokens"] >= r.usage.completion_tokens  # the final EOS is spent, not returned


def test_completions(client, tokens):
    count, prompt_count = tokens
    r = client.completions.create(model="toy-cot", prompt=PROBLEM)
    assert r.choices[0].text.endswith("\\boxed{161}")
    assert r.usage.completion_tokens == count(r.choices[0].text)
    assert r.usage.prompt_tokens == prompt_count(PROBLEM)


def test_chat_stream_sends_each_step(client, tokens):
    count, _ = tokens
    whole = client.chat.completions.create(model="toy-cot", messages=[{"role": "user", "content": PROBLEM}])
    chunks = list(
        client.chat.completions.create(model="toy-cot", messages=[{"role": "user", "content": PROBLEM}], stream=True)
    )
    steps = [c.model_extra["reasoner"]["step"] for c in chunks if "step" in (c.model_extra.get("reasoner") or {})]
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == whole.choices[0].message.content
    assert [s["text"] for s in steps] == [s["text"] for s in whole.choices[0].model_extra["reasoner"]["steps"]]
    # one chunk per step, each carrying that step as its content delta
    step_chunks = [c for c in chunks if c.choices and "step" in (c.model_extra.get("reasoner") or {})]
    assert len(step_chunks) == len(steps) >= 3
    assert step_chunks[1].choices[0].delta.content == "\n\n" + steps[1]["text"]
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    usage = chunks[-1].usage
    assert usage.completion_tokens == count(content) and usage.prompt_tokens == whole.usage.prompt_tokens


def test_completions_stream(client, tokens):
    count, _ = tokens
    chunks = list(client.completions.create(model="toy-cot", prompt=PROBLEM, stream=True))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text.endswith("\\boxed{161}")
    assert chunks[-1].usage.completion_tokens == count(text)


def test_n_choices(client, tokens):
    count, _ = tokens
    r = client.chat.completions.create(
        model="toy-cot", messages=[{"role": "user", "content": PROBLEM}], n=3, temperature=1.0
    )
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert all(c.message.content for c in r.choices)
    assert r.usage.completion_tokens == sum(count(c.message.content) for c in r.choices)
    chunks = list(client.completions.create(model="toy-cot", prompt=PROBLEM, n=2, stream=True))
    texts = {i: "".join(c.choices[0].text for c in chunks if c.choices and c.choices[0].index == i) for i in (0, 1)}
    assert all(t.endswith("}") for t in texts.values())
    assert chunks[-1].usage.completion_tokens == sum(count(t) for t in texts.values())


def test_stop_strings_cut_the_content_and_the_work(client, tokens):
    count, _ = tokens
    r = client.chat.completions.create(model="toy-cot", messages=[{"role": "user", "content": PROBLEM}], stop=["126-"])
    content = r.choices[0].message.content
    assert content == "17+25=42\n\n42*3=126\n\n" and r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == count(content)
    # the chain stopped when the stop string appeared: its later steps were never written
    assert len(r.choices[0].model_extra["reasoner"]["steps"]) == 3
    chunks = list(client.completions.create(model="toy-cot", prompt=PROBLEM, stop="*3", stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "17+25=42\n\n42"


def test_step_speculation_names_each_steps_model(client):
    r = client.chat.completions.create(model="toy-specreason", messages=[{"role": "user", "content": PROBLEM}])
    steps = r.choices[0].model_extra["reasoner"]["steps"]
    assert steps and all(s["model"] in ("draft", "target") for s in steps)
    assert all("accepted" in s["speculation"] for s in steps)
    cost = r.model_extra["reasoner"]["cost"]["roles"]
    assert cost["draft"]["generated_tokens"] > 0  # the draft wrote (and the target judged) every step
    chunks = list(
        client.chat.completions.create(
            model="toy-specreason", messages=[{"role": "user", "content": PROBLEM}], stream=True
        )
    )
    streamed = [c.model_extra["reasoner"]["step"] for c in chunks if "step" in (c.model_extra.get("reasoner") or {})]
    assert [(s["text"], s["model"]) for s in streamed] == [(s["text"], s["model"]) for s in steps]


def test_the_slo_class_sets_the_step_acceptance_threshold(client):
    """``--slo-class eager=1e6:0`` accepts every draft step (the judge scores 0-9), ``strict=1e6:10`` none."""

    def models(slo: str) -> set[str]:
        r = client.chat.completions.create(
            model="toy-specreason", messages=[{"role": "user", "content": PROBLEM}], extra_body={"slo": slo}
        )
        steps = r.choices[0].model_extra["reasoner"]["steps"]
        assert r.choices[0].model_extra["reasoner"]["answer"] == "161" or slo == "eager"
        return {s["model"] for s in steps}

    assert models("eager") == {"draft"}
    assert models("strict") == {"target"}


def test_reasoner_object_sets_the_search_and_budget(client):
    r = client.chat.completions.create(
        model="toy-cot",
        messages=[{"role": "user", "content": PROBLEM}],
        temperature=0.8,
        extra_body={"reasoner": {"search": {"method": "best_of_n", "n": 4}, "budget": {"max_steps": 2}, "tree": True}},
    )
    ext = r.model_extra["reasoner"]
    assert ext["search"]["method"] == "best_of_n" and ext["search"]["n"] == 4 and ext["budget"]["max_steps"] == 2
    choice = r.choices[0].model_extra["reasoner"]
    assert len(choice["steps"]) <= 2 and r.choices[0].finish_reason == "length"
    assert len([n for n in choice["tree"]["nodes"] if n["parent"] is None]) == 4  # four trajectories were tried
    assert ext["cost"]["roles"]["target"]["generated_tokens"] > r.usage.completion_tokens


def test_concurrent_requests_share_the_batch_without_crosstalk(server, client):
    problems = generate_problems(16, seed=7, difficulty="easy")
    assert len({p.answer for p in problems}) > 8
    before = (_metric(server, "reasoner_batch_steps_total", model="toy-cot"),
              _metric(server, "reasoner_batch_requests_total", model="toy-cot"))  # fmt: skip
    barrier = threading.Barrier(16)

    def ask(problem):
        barrier.wait()
        r = client.chat.completions.create(model="toy-cot", messages=[{"role": "user", "content": problem.question}])
        return r.choices[0].model_extra["reasoner"]["answer"]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, problems))
    assert answers == [str(p.answer) for p in problems]
    steps = _metric(server, "reasoner_batch_steps_total", model="toy-cot") - before[0]
    calls = _metric(server, "reasoner_batch_requests_total", model="toy-cot") - before[1]
    assert calls / steps > 2  # the requests' calls were decoded together, not one after another


# -- errors ------------------------------------------------------------------------------------------------------


def _error(response, status: int, code: str | None = None, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error


def test_bad_requests_get_openai_errors_and_the_server_lives(server, client):
    url = server + "/v1/chat/completions"
    ok = {"model": "toy-cot", "messages": [{"role": "user", "content": "Compute 2+3."}]}
    _error(httpx.post(url, content=b"{not json"), 400, "invalid_json")
    _error(httpx.post(url, content=b"\xff\xfe"), 400, "invalid_json")
    _error(httpx.post(url, json=[1, 2]), 400, "invalid_json")
    _error(httpx.post(url, json=ok | {"model": "gpt-9"}), 404, "model_not_found", "model")
    _error(httpx.post(url, json=ok | {"n": "2"}), 400, "invalid_type", "n")
    _error(httpx.post(url, json=ok | {"temperature": "hot"}), 400, "invalid_type", "temperature")
    _error(httpx.post(url, json=ok | {"messages": "hi"}), 400, "invalid_type", "messages")
    _error(httpx.post(url, json=ok | {"messages": [{"role": "user", "content": 5}]}), 400, "invalid_type")
    _error(httpx.post(url, json=ok | {"messages": [{"role": "system", "content": "x"}]}), 400, param="messages")
    _error(httpx.post(url, json={"messages": ok["messages"]}), 400, param="model")
    _error(httpx.post(url, json=ok | {"max_tokens": -5}), 400, param="max_tokens")
    _error(httpx.post(url, json=ok | {"reasoner": {"budget": {"max_tokens": -1}}}), 400, param="reasoner.budget")
    _error(httpx.post(url, json=ok | {"reasoner": {"search": {"method": "nope"}}}), 400, param="reasoner.search")
    _error(httpx.post(url, json=ok | {"reasoner": {"models": {}}}), 400, param="reasoner.models")
    _error(httpx.post(url, json=ok | {"slo": "platinum"}), 400, "unknown_slo_class", "slo")
    _error(httpx.post(url, json=ok | {"slo": {"tpot_ms": -1}}), 400, param="slo.tpot_ms")
    _error(httpx.post(url, json=ok | {"slo": {"tpot_ms": "fast"}}), 400, "invalid_type")
    _error(httpx.post(url, json=ok | {"slo": {"ttft_ms": 5}}), 400)
    _error(httpx.post(url, json=ok | {"slo": 40}), 400, "invalid_type")
    _error(httpx.get(server + "/v1/nothing"), 404)
    too_long = {"model": "toy-cot", "prompt": "Compute 1+2. " * 400}
    _error(httpx.post(server + "/v1/completions", json=too_long), 400, "context_length_exceeded", "prompt")
    _error(httpx.post(server + "/v1/completions", json=too_long | {"stream": True}), 400, "context_length_exceeded")
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=ok["messages"])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="toy-cot", messages=ok["messages"], n=-1)
    # nothing above took the server down or left a request running
    assert client.chat.completions.create(**ok).choices[0].model_extra["reasoner"]["answer"] == "5"
    assert _metric(server, "reasoner_requests_running") == 0
    assert _metric(server, "reasoner_requests_total", status="500") == 0


def test_slo_attainment_per_class(server, client):
    before = _metric(server, "reasoner_slo_requests_total", slo="loose", met="true")
    client.chat.completions.create(
        model="toy-cot", messages=[{"role": "user", "content": PROBLEM}], extra_body={"slo": "loose"}
    )
    client.chat.completions.create(
        model="toy-cot", messages=[{"role": "user", "content": PROBLEM}], extra_body={"slo": {"tpot_ms": 1e-6}}
    )
    assert _metric(server, "reasoner_slo_requests_total", slo="loose", met="true") == before + 1
    assert _metric(server, "reasoner_slo_requests_total", slo="custom", met="false") >= 1
    assert _metric(server, "reasoner_slo_attainment", slo="loose") == 1.0


def test_disconnect_cancels_the_work(server):
    """A client that goes away mid-stream: its trees are cancelled, the scheduler drops their sequences (from the
    running batch, or before they join it) and nothing is generated for it afterwards."""
    before = _metric(server, "reasoner_sequences_cancelled_total", model="toy-cot")
    body = {"model": "toy-cot", "prompt": HARD, "stream": True, "temperature": 1.0, "reasoner": LONG}
    with httpx.stream("POST", server + "/v1/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert "step" in json.loads(first[6:])["reasoner"]  # the search is under way
        assert _wait_for(lambda: _metric(server, "reasoner_batch_rows", model="toy-cot") > 0)  # its rows decode
    # without the cancellation the 64 trajectories would go on for seconds: here they stop at once
    assert _wait_for(lambda: _metric(server, "reasoner_sequences_cancelled_total", model="toy-cot") > before, 10)
    assert _wait_for(lambda: _metric(server, "reasoner_batch_rows", model="toy-cot") == 0, 10)
    assert _wait_for(lambda: _metric(server, "reasoner_requests_running") == 0, 10)
    assert _metric(server, "reasoner_requests_cancelled_total", model="toy-cot", reason="disconnected") >= 1
    generated = _metric(server, "reasoner_model_generated_tokens_total", model="toy-cot")
    time.sleep(0.5)
    assert _metric(server, "reasoner_model_generated_tokens_total", model="toy-cot") == generated  # nothing runs on


# -- a small server: the queue's bound, SIGTERM, the command line ------------------------------------------------


@pytest.fixture(scope="module")
def small():
    proc, url = _start("--recipe", "toy-cot", "--max-running", "1", "--max-queue", "0", "--retry-after", "3")
    yield proc, url
    _stop(proc)


def _long_request(url: str, out: list, stream: bool = False) -> threading.Thread:
    body = {"model": "toy-cot", "prompt": HARD, "temperature": 1.0, "reasoner": LONG, "stream": stream}

    def run():
        r = httpx.post(url + "/v1/completions", json=body, timeout=120)
        out.append(r)

    thread = threading.Thread(target=run)
    thread.start()
    assert _wait_for(lambda: _metric(url, "reasoner_requests_running") == 1)
    return thread


def test_full_queue_is_429_with_retry_after(small):
    _, url = small
    out: list = []
    thread = _long_request(url, out)
    r = httpx.post(url + "/v1/completions", json={"model": "toy-cot", "prompt": PROBLEM})
    _error(r, 429, "queue_full")
    assert r.headers["retry-after"] == "3"
    thread.join()
    assert out[0].status_code == 200  # the one that held the slot was answered
    assert httpx.post(url + "/v1/completions", json={"model": "toy-cot", "prompt": PROBLEM}).status_code == 200


@pytest.fixture(scope="module")
def one_slot():
    proc, url = _start(
        "--recipe", "toy-cot", "--max-running", "1", "--slo-class", "tight=1", "--slo-class", "loose=1e6"
    )
    yield url
    _stop(proc)


def test_a_tight_slo_is_admitted_before_loose_ones_that_came_first(one_slot):
    """With one running slot held, two loose requests queue, then a tight one: the tight one is served next
    (earliest deadline first, ``_Slots``); in arrival order (``--slo-order fifo``) it would be last."""
    url, held, done = one_slot, [], []
    holder = _long_request(url, held)

    def ask(slo: str, problem: str) -> threading.Thread:
        def run():
            body = {"model": "toy-cot", "prompt": problem, "slo": slo}
            r = httpx.post(url + "/v1/completions", json=body, timeout=120)
            done.append((slo, r.status_code))

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    threads = []
    for i, slo in enumerate(["loose", "loose", "tight"]):
        threads.append(ask(slo, f"Compute {i + 2}+3."))
        assert _wait_for(lambda n=i + 1: _metric(url, "reasoner_queue_depth") == n)  # queued, in this order
    for thread in [holder, *threads]:
        thread.join()
    assert held[0].status_code == 200
    assert done == [("tight", 200), ("loose", 200), ("loose", 200)]
    assert _metric(url, "reasoner_slo_requests_total", slo="loose", met="true") == 2
    assert _metric(url, "reasoner_slo_attainment", slo="loose") == 1.0
    assert _metric(url, "reasoner_slo_attainment", slo="tight") == 0.0  # 1 ms a token is beyond the toy model


def test_a_deadline_counts_the_tokens_a_request_will_write():
    """Attainment is over the whole request (seconds from arrival over completion tokens), so the deadline is the
    arrival plus TPOT times the expected tokens: a tight request (10 ms a token) that arrives a second after a loose
    one (100 ms) is due first for any answer longer than 11 tokens. Keyed on the first token alone (arrival + TPOT)
    the loose one would go first."""
    import asyncio

    from evals.serve import _Slots

    async def order() -> list[str]:
        slots, served = _Slots(1, "slo"), []
        await slots.acquire(0.0)  # the one slot is taken

        async def wait(name: str, key: float):
            await slots.acquire(key)
            served.append(name)
            slots.release()

        loose = asyncio.create_task(wait("loose", slots.key(0.0, 100.0, tokens=64)))
        tight = asyncio.create_task(wait("tight", slots.key(1.0, 10.0, tokens=64)))
        await asyncio.sleep(0)
        slots.release()
        await asyncio.gather(loose, tight)
        return served

    assert asyncio.run(order()) == ["tight", "loose"]


def test_sigterm_drains_in_flight_requests(small):
    proc, url = small
    out: list = []
    thread = _long_request(url, out)
    proc.send_signal(signal.SIGTERM)
    thread.join()
    assert out[0].status_code == 200 and out[0].json()["choices"][0]["text"]  # answered in full
    assert proc.wait(60) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/health")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "reasoner", "serve", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
    r = _cli("--recipe", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "missing.yaml" in r.stderr, r.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        r = _cli("--recipe", "toy-cot", "--port", str(busy.getsockname()[1]))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "cannot listen" in r.stderr, r.stderr
    r = _cli("--recipe", "toy-cot", "--slo-class", "tight")
    assert r.returncode == 2 and r.stderr.count("\n") == 1


def test_import_reasoner_cli_loads_no_server_libraries():
    heavy = "('fastapi', 'uvicorn', 'prometheus_client')"
    probe = f"import reasoner.cli, sys; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bench_serve_counts_a_request_as_met_by_its_own_class():
    """``reasoner bench serve``'s accounting: TPOT is latency over completion tokens, met against the request's class;
    goodput counts only the met requests' tokens; the trace is the same for every order (seeded)."""
    from types import SimpleNamespace

    from evals.bench_serve import make_trace, summarize

    assert make_trace(20, 5.0, 0.3, seed=1) == make_trace(20, 5.0, 0.3, seed=1)
    args = SimpleNamespace(tight_ms=10.0, loose_ms=100.0)
    rows = [
        {"slo": "tight", "status": 200, "latency_s": 0.5, "tokens": 100, "wall_s": 10.0},  # 5 ms/token: met
        {"slo": "tight", "status": 200, "latency_s": 2.0, "tokens": 100, "wall_s": 10.0},  # 20 ms: missed
        {"slo": "loose", "status": 200, "latency_s": 2.0, "tokens": 100, "wall_s": 10.0},  # 20 ms: met (loose)
        {"slo": "loose", "status": 500, "latency_s": 0.1, "tokens": 0, "wall_s": 10.0},  # an error: missed
    ]
    s = summarize(rows, args)
    assert s["tight"]["attainment"] == 0.5 and s["loose"]["attainment"] == 0.5 and s["all"]["attainment"] == 0.5
    assert s["all"]["goodput_tok_s"] == 20.0 and s["all"]["throughput_tok_s"] == 30.0 and s["loose"]["errors"] == 1


def test_bench_serve_refuses_an_unknown_order():
    r = subprocess.run(
        [sys.executable, "-m", "reasoner", "bench", "serve", "--orders", "lifo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: --orders 'lifo': use slo, fifo or both (comma-separated)"
    ]
