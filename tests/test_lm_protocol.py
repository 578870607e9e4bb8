"""The ``LM`` protocol, the same cases against every backend installed here: transformers always; vLLM (an engine in
this process) and the OpenAI-compatible client (a real vLLM server on loopback) where the ``vllm`` package is
installed (CI's second venv). Every call returns its rows with what it cost, and the model's running ``stats``
grows by exactly that."""

import pytest

from reasoner.backends import load_lm, resolve_path
from reasoner.core.lm import LM, Output, SamplingParams
from reasoner.core.stats import RoleStats

BACKENDS = ["transformers", "vllm", "openai"]


@pytest.fixture(scope="module", params=BACKENDS)
def lm(request, tmp_path_factory):
    if request.param == "transformers":
        yield load_lm("transformers", "toy:target", "target", seed=0)
        return
    pytest.importorskip("vllm")
    if request.param == "vllm":
        yield load_lm("vllm", "toy:target", "target", dtype="float32", engine_args={"enforce_eager": True})
        return
    from vllm_servers import free_port, serve, stop, wait_until_up

    port, log = free_port(), tmp_path_factory.mktemp("server") / "vllm.log"
    proc = serve(resolve_path("toy:target"), port, log)
    try:
        wait_until_up(proc, f"http://127.0.0.1:{port}", log)
        yield load_lm("openai", "toy:target", "target", base_url=[f"http://127.0.0.1:{port}/v1"])
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def prompts(lm, template):
    return [template.prompt(lm.tokenizer, q) for q in ("Compute 17+25.", "Compute (12+30)*2-5.", "Compute 9*8.")]


def spent(lm, before) -> RoleStats:
    return lm.stats.since(before).roles[lm.role]


def test_it_is_an_lm_with_tokens_both_ways(lm, prompts):
    assert isinstance(lm, LM)
    ids = lm.encode(prompts[0])
    assert ids and lm.encode(ids) == ids and lm.decode(ids) == prompts[0]
    assert lm.kv_bytes_per_token is None or lm.kv_bytes_per_token > 0


def test_generate_returns_each_prompts_samples_and_what_they_cost(lm, prompts):
    before = lm.stats.snapshot()
    out = lm.generate(prompts, SamplingParams(n=2, temperature=1.0, max_tokens=12, seed=3, stop=("\n\n",)))
    assert isinstance(out, Output) and len(out) == len(prompts) and all(len(row) == 2 for row in out)
    for prompt, row, usage in zip(prompts, out, out.usage):
        assert usage.prefill_tokens + usage.prefix_cached_tokens == len(lm.encode(prompt))
        assert usage.generated_tokens == sum(len(g.token_ids) for g in row)
        assert all(len(g.logprobs) == len(g.token_ids) and g.finish_reason in ("stop", "eos", "length") for g in row)
    total = out.total
    assert total.calls == 1 and total.generated_tokens == sum(u.generated_tokens for u in out.usage)
    assert total.prefill_tokens == sum(u.prefill_tokens for u in out.usage)
    assert spent(lm, before) == total  # the running total grew by what the call said it cost, no more


def test_score_and_next_token_logprobs_return_rows_with_their_cost(lm, prompts):
    greedy = lm.generate(prompts, SamplingParams(max_tokens=8))
    before = lm.stats.snapshot()
    scored = lm.score(prompts, [row[0].token_ids for row in greedy])
    assert isinstance(scored, Output) and [len(s) for s in scored] == [len(row[0].token_ids) for row in greedy]
    for row, s in zip(greedy, scored):  # teacher forcing gives the generation's own log-probabilities
        assert max(abs(a - b) for a, b in zip(row[0].logprobs, s)) < 1e-4
    for prompt, row, usage in zip(prompts, greedy, scored.usage):
        assert usage.prefill_tokens + usage.prefix_cached_tokens == len(lm.encode(prompt)) + len(row[0].token_ids)
    judged = lm.next_token_logprobs(prompts, list("0123456789"))
    assert isinstance(judged, Output) and all(set(d) == set("0123456789") for d in judged)
    both = RoleStats()
    both += scored.total
    both += judged.total
    assert spent(lm, before) == both


def test_clearing_the_prefix_cache_changes_no_output(lm, prompts):
    params = SamplingParams(max_tokens=16)
    first = lm.generate(prompts, params)
    lm.clear_prefix_cache()
    again = lm.generate(prompts, params)
    assert [r[0].token_ids for r in again] == [r[0].token_ids for r in first]
