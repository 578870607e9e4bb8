"""The OpenAI-compatible backend and the fleet, against two real vLLM OpenAI servers on loopback serving the toy
target (started and stopped here): same output as the transformers backend; requests spread over the servers,
trajectories stay on theirs (prefix-cache hits), and an eval survives one server killed mid-run.

The server tests need the ``vllm`` package (CI's second venv: ``.ci/run``, stage "vLLM") and skip without it."""

import json
import signal
import threading
import time

import pytest
from vllm_servers import free_port, serve, stop, wait_until_up

from reasoner import Reasoner
from reasoner.backends import SamplingParams, load_lm, resolve_path
from reasoner.backends.fleet import ServerError, normalize_url
from reasoner.recipe import Recipe, RecipeError

UNSURE = ["Compute 9.", "Compute 98*7*9*8-5."]  # prompts on which the toy target's samples differ


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Two servers of the toy target, started together; the last test of this module kills the second."""
    pytest.importorskip("vllm")
    logs = tmp_path_factory.mktemp("vllm-servers")
    ports = [free_port(), free_port()]
    procs = [serve(resolve_path("toy:target"), port, logs / f"{port}.log") for port in ports]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for proc, url, port in zip(procs, urls, ports):
            wait_until_up(proc, url, logs / f"{port}.log")
        yield urls, procs
    finally:
        for proc in procs:
            stop(proc)


def client(urls, **options):
    return load_lm("openai", "toy:target", "target", base_url=urls, **options)


def test_greedy_and_steps_equal_transformers(servers, toy_target, toy_prompts):
    lm, generated = client(servers[0][:1]), 0
    for params in (SamplingParams(max_tokens=80), SamplingParams(max_tokens=80, stop=("\n\n",))):
        ours, theirs = lm.generate(toy_prompts, params), toy_target.generate(toy_prompts, params)
        for a, b in zip(ours, theirs):
            a, b = a[0], b[0]
            assert (a.token_ids, a.text, a.finish_reason, a.stop_reason) == (
                b.token_ids,
                b.text,
                b.finish_reason,
                b.stop_reason,
            )
            generated += len(a.token_ids)
    role = lm.stats.role("target")
    assert role.calls == 2 and role.generated_tokens == generated


def test_score_and_judge_logprobs_agree_with_transformers(servers, toy_target, toy_prompts):
    lm = client(servers[0][:1])
    steps = [g[0].token_ids for g in toy_target.generate(toy_prompts, SamplingParams(max_tokens=40, stop=("\n\n",)))]
    ours, theirs = lm.score(toy_prompts, steps), toy_target.score(toy_prompts, steps)
    assert [len(s) for s in ours] == [len(s) for s in steps]
    assert max(abs(a - b) for x, y in zip(ours, theirs) for a, b in zip(x, y)) < 1e-4
    digits = [str(d) for d in range(10)]
    ours, theirs = (
        lm.next_token_logprobs(toy_prompts[:8], digits),
        toy_target.next_token_logprobs(toy_prompts[:8], digits),
    )
    assert max(abs(x[d] - y[d]) for x, y in zip(ours, theirs) for d in digits) < 1e-4


def test_sampling_is_seeded_and_logprobs_are_the_models_own(servers, template, toy_target):
    lm = client(servers[0][:1])
    prompts = [template.prompt(lm.tokenizer, q) for q in UNSURE]
    params = SamplingParams(n=6, temperature=1.5, top_p=0.95, max_tokens=24, seed=5)
    first, again = lm.generate(prompts, params), lm.generate(prompts, params)
    assert [[g.token_ids for g in gs] for gs in first] == [[g.token_ids for g in gs] for gs in again]
    assert all(len({tuple(g.token_ids) for g in gs}) > 1 for gs in first)
    flat = [g for gs in first for g in gs]
    scored = toy_target.score([p for p, gs in zip(prompts, first) for _ in gs], [g.token_ids for g in flat])
    assert max(abs(a - b) for g, s in zip(flat, scored) for a, b in zip(g.logprobs, s)) < 1e-4


def test_recipe_backend_options():
    spec = Recipe.load(
        "toy-cot", ["models.target.backend=openai", "models.target.base_url=http://a:8000/v1,http://b:8000"]
    ).models.target
    assert spec.backend_options() == {"base_url": ["http://a:8000/v1", "http://b:8000"]}
    assert [normalize_url(u) for u in spec.base_url] == ["http://a:8000/v1", "http://b:8000/v1"]
    with pytest.raises(RecipeError, match="base_url"):
        Recipe.load("toy-cot", {"models": {"target": {"backend": "openai"}}})
    with pytest.raises(RecipeError, match="backend: vllm"):
        Recipe.load("toy-cot", {"models": {"target": {"engine_args": {"tensor_parallel_size": 2}}}})
    with pytest.raises(ValueError, match="http"):
        normalize_url("localhost:8000")


def test_vllm_backend_without_vllm_says_what_to_install():
    try:
        import vllm  # noqa: F401

        pytest.skip("vllm is installed")
    except ImportError:
        pass
    with pytest.raises(ValueError, match=r"pip install 'spec-reasoner\[vllm\]'"):
        Reasoner("toy-cot-vllm")


def test_clear_errors(servers):
    with pytest.raises(ValueError, match="serve"):
        load_lm("openai", "toy:draft", "draft", base_url=servers[0][:1])  # the servers serve the target
    with pytest.raises(ServerError, match="127.0.0.1"):
        client([f"http://127.0.0.1:{free_port()}/v1"])
    with pytest.raises(ValueError, match="dtype"):
        client(servers[0][:1], dtype="float16")


def test_reasoner_over_the_fleet_spreads_requests_and_keeps_trajectories_on_their_server(servers):
    """Least-loaded spreads the problems over both servers; each next step goes where its prefix went, so the
    servers' prefix caches hit; the answers are those of the transformers backend."""
    urls = servers[0]
    recipe = Recipe.load(  # step by step: a request per step, each to the server holding its prefix
        "toy-cot",
        {
            "models": {"target": {"backend": "openai", "base_url": urls, "max_batch_size": 1}},
            "search": {"method": "cot", "whole": False},
        },
    )
    problems = [
        f"Compute {a}+{b}*3-{c}."
        for a, b, c in [(17, 25, 48), (45, 38, 17), (12, 34, 56), (90, 11, 7), (23, 45, 67), (31, 41, 59)]
    ]
    ours = Reasoner(recipe)
    solutions = ours.solve_many(problems)
    assert [s.text for s in solutions] == [s.text for s in Reasoner("toy-cot").solve_many(problems)]
    fleet = ours.models["target"].fleet
    assert all(e.served >= len(problems) for e in fleet.endpoints)  # both servers worked
    assert ours.last_run.roles["target"].prefix_cached_tokens > 0
    # one request per step, in order: every step of a trajectory was served where its first step was
    lm = ours.models["target"]
    prompts = [ours.template.prompt(lm.tokenizer, p) for p in problems]
    first = lm.generate(prompts, SamplingParams(max_tokens=40, stop=("\n\n",)))
    second = lm.generate(
        [p + g[0].text + "\n\n" for p, g in zip(prompts, first)], SamplingParams(max_tokens=40, stop=("\n\n",))
    )
    assert {g[0].extra["server"] for g in first} == {f"{u}/v1" for u in urls}
    assert [g[0].extra["server"] for g in second] == [g[0].extra["server"] for g in first]


def test_eval_survives_a_server_killed_mid_run(servers, tmp_path):
    from evals.runner import evaluate

    urls, procs = servers
    recipe = Recipe.load(
        "toy-cot", {"models": {"target": {"backend": "openai", "base_url": urls}}, "suite": {"seed": 11}}
    )
    out, limit = tmp_path / "run", 12
    summary: dict = {}
    worker = threading.Thread(
        target=lambda: summary.update(evaluate(recipe, out, limit=limit, batch_size=3, progress=False))
    )
    worker.start()
    results = out / "results.jsonl"
    while worker.is_alive() and not (results.is_file() and results.read_text().count("\n") >= 1):
        time.sleep(0.05)
    stop(procs[1], signal.SIGKILL)  # a crash, mid-run: the first batch is written, the others are not
    worker.join()
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert summary["n"] == limit and len({r["id"] for r in rows}) == limit
    evaluate(Recipe.load("toy-cot", {"suite": {"seed": 11}}), tmp_path / "reference", limit=limit, progress=False)
    reference = [json.loads(line) for line in (tmp_path / "reference" / "results.jsonl").read_text().splitlines()]
    assert {r["id"]: r["answer"] for r in rows} == {r["id"]: r["answer"] for r in reference}
    from reasoner.backends.fleet import fleet

    dead = fleet(urls).endpoints[1]
    assert dead.failed >= 1 and "Error" in dead.last_error
