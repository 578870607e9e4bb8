"""The prefix KV cache of the transformers backend changes costs, never results: greedy generations, scores and
next-token log-probabilities equal those of an uncached backend (on prompts that extend cached ones, share only
part of them, or share nothing), the counters say exactly how many tokens were prefilled and how many came from
the cache, eviction keeps it under capacity, and a search or step-speculation recipe answers the same with fewer
prefilled tokens."""

import pytest
import torch

from reasoner.backends import SamplingParams, load_lm
from reasoner.backends.prefix_cache import PrefixCache
from reasoner.backends.speculative import build_drafter

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOL = 1e-4


def lm(capacity: int = 0, drafter=None):
    model = load_lm("transformers", "toy:target", "target", dtype="float32", seed=0, prefix_cache_tokens=capacity)
    if drafter:
        model.drafter = build_drafter(drafter, model)
    return model


@pytest.fixture(scope="module")
def prompts(template):
    from reasoner.toy import generate_problems

    tok = lm().tokenizer
    return [template.prompt(tok, p.question) for p in generate_problems(12, seed=7)]


def assert_same(plain, cached):
    for a, b in zip(plain, cached):
        for x, y in zip(a, b):
            assert x.token_ids == y.token_ids and x.finish_reason == y.finish_reason and x.text == y.text
            assert max((abs(p - q) for p, q in zip(x.logprobs, y.logprobs)), default=0) < TOL


def extend(prompts, gens):
    """Each prompt followed by its first step: the prompt of the node's child."""
    return [p + g[0].text + "\n\n" for p, g in zip(prompts, gens)]


@pytest.mark.parametrize("drafter", [None, {"method": "prompt_lookup"}], ids=["plain", "token-speculation"])
def test_greedy_generations_equal_uncached(prompts, drafter):
    plain, cached = lm(0, drafter), lm(100_000, drafter)
    params = SamplingParams(max_tokens=40, stop=("\n\n",))
    first = [plain.generate(prompts[:6], params), cached.generate(prompts[:6], params)]
    assert_same(*first)
    # children of the first six (extend cached sequences), six unseen prompts (share only the chat header), a repeat
    second = extend(prompts[:6], first[0]) + prompts[6:] + [prompts[0]]
    p = SamplingParams(max_tokens=40, stop=("\n\n",), n=2)
    out = [plain.generate(second, p), cached.generate(second, p)]
    assert_same(*out)
    role = cached.stats.role("target")
    assert role.prefix_cached_tokens > 0 and cached.prefix_cache.hits > 0
    assert role.prefill_tokens + role.prefix_cached_tokens == plain.stats.role("target").prefill_tokens
    hit = [u.prefix_cached_tokens for u in out[1].usage]
    assert all(h > 0 for h in hit)  # every prompt shares at least the chat header
    if drafter is None:  # a child reuses its parent's prompt and step: all but the delimiter's last token
        assert hit[:6] == [len(cached.encode(c)) - 1 for c in second[:6]]
    else:  # token speculation stores prompts only (its accepted KV has holes): the parent's prompt
        assert hit[:6] == [len(cached.encode(c)) - 1 for c in prompts[:6]]  # prefills run the prompt but its last token


def test_score_and_next_token_logprobs_equal_uncached(prompts):
    plain, cached = lm(0), lm(100_000)
    steps = plain.generate(prompts[:8], SamplingParams(max_tokens=40, stop=("\n\n",)))
    conts = [g[0].text + "\n\n" for g in steps]
    more = [c + "1 + 1 = 2\n\n" for c in conts]  # a continuation extending a scored one: its known part is reused
    for args in [(prompts[:8], conts), (prompts[:8], more), (extend(prompts[:4], steps), more[:4])]:
        a, b = plain.score(*args), cached.score(*args)
        assert [len(x) for x in a] == [len(x) for x in b]
        assert max(abs(x - y) for u, v in zip(a, b) for x, y in zip(u, v)) < TOL
    judge = [p + c + "Score: " for p, c in zip(prompts[:8], conts)] + prompts[8:]
    for _ in range(2):
        a, b = (
            plain.next_token_logprobs(judge, list("0123456789")),
            cached.next_token_logprobs(judge, list("0123456789")),
        )
        assert max(abs(x[k] - y[k]) for u, v in zip(a, b) for x, y in [(u, v)] for k in x) < TOL
    assert cached.stats.role("target").prefill_tokens < plain.stats.role("target").prefill_tokens


def test_counters_say_exactly_what_was_prefilled(prompts):
    model = lm(100_000)
    role = model.stats.role("target")
    prompt = model.encode(prompts[0])
    first = model.generate([prompt], SamplingParams(max_tokens=12, ignore_eos=True))
    gen = first[0][0]
    assert (role.prefill_tokens, role.prefix_cached_tokens, first.usage[0].prefix_cached_tokens) == (len(prompt), 0, 0)
    # the prompt and all generated tokens but the last (whose KV was never computed) are cached
    longer = prompt + gen.token_ids + [5, 6, 7]
    before = role.prefill_tokens
    again = model.generate([longer], SamplingParams(max_tokens=3, ignore_eos=True))
    reused = len(prompt) + len(gen.token_ids) - 1
    assert (role.prefill_tokens - before, role.prefix_cached_tokens, again.usage[0].prefix_cached_tokens) == (
        len(longer) - reused,
        reused,
        reused,
    )
    # score: the prompt but its last token comes from the cache; once scored, the continuation too
    cont = [9, 10, 11, 12]
    p2 = prompts[1]
    n2 = len(model.encode(p2))
    before, cached_before = role.prefill_tokens, role.prefix_cached_tokens
    model.score([p2], [cont])
    header = role.prefix_cached_tokens - cached_before  # the chat header it shares with prompts[0]
    assert 0 < header < n2 and role.prefill_tokens - before == n2 + len(cont) - header
    before, cached_before = role.prefill_tokens, role.prefix_cached_tokens
    model.score([p2], [cont + [13, 14]])
    assert (role.prefill_tokens - before, role.prefix_cached_tokens - cached_before) == (3, n2 + len(cont) - 1)


def test_eviction_keeps_the_cache_under_capacity_and_correct(prompts):
    plain, small = lm(0), lm(150)  # a prompt with its step is ~40 tokens: three or four fit
    params = SamplingParams(max_tokens=40, stop=("\n\n",))
    seen = []
    for batch in (prompts[:4], prompts[4:8], prompts[:4]):
        a, b = plain.generate(batch, params), small.generate(batch, params)
        assert_same(a, b)
        a2, b2 = plain.generate(extend(batch, a), params), small.generate(extend(batch, a), params)
        assert_same(a2, b2)
        cache = small.prefix_cache
        assert 0 < cache.size_tokens <= 150
        assert cache.size_tokens == sum(len(e) for e in cache.entries.values())
        seen.append(cache.evictions)
    assert seen[-1] > 0 and small.stats.role("target").prefix_cached_tokens > 0


def kv(n: int):
    return [(torch.full((1, n, 2), float(n)), torch.full((1, n, 2), -float(n)))]


def test_prefix_cache_lookup_insert_replace_and_lru():
    cache = PrefixCache(10)
    assert cache.lookup([1, 2]) == (None, 0)
    assert cache.insert([1, 2, 3], kv(3))
    assert not cache.insert([1, 2], kv(2))  # a prefix of a stored sequence is served by it
    entry, m = cache.lookup([1, 2, 9])
    assert m == 2 and entry.tokens == (1, 2, 3)
    assert cache.insert([1, 2, 3, 4], kv(4))  # extends the stored one: replaces it
    assert len(cache) == 1 and cache.size_tokens == 4
    assert cache.insert([5, 6, 7], kv(3))
    assert cache.insert([1, 2, 8], kv(3))  # shares [1, 2] with [1, 2, 3, 4]: both kept, prefix held twice
    assert cache.size_tokens == 10
    cache.lookup([5, 6])  # [5, 6, 7] becomes the most recently used
    assert cache.insert([9, 9], kv(2))  # over capacity: the least recently used entry goes
    assert cache.lookup([1, 2, 3, 4])[1] == 2 and cache.lookup([5, 6, 7])[1] == 3
    assert cache.size_tokens <= 10 and cache.evictions == 1
    assert not cache.insert(list(range(11)), kv(11))  # longer than the whole cache
    with pytest.raises(ValueError, match="capacity"):
        PrefixCache(0)


def test_kv_bytes_per_token_of_the_toy_target():
    # toy target: 4 layers x 4 kv heads x head dim 48, keys and values, float32
    assert lm(0).kv_bytes_per_token == 2 * 4 * 4 * 48 * 4


@pytest.mark.parametrize("recipe", ["toy-likelihood", "toy-beam"])
def test_recipe_answers_the_same_with_fewer_prefilled_tokens(recipe):
    from evals.runner import solve_batch, summarize
    from evals.suites import load_suite
    from reasoner import Reasoner

    overrides = ["search.n=4", "search.width=2"] if recipe == "toy-beam" else []
    roles = ("draft",) if recipe == "toy-beam" else ("draft", "target")
    runs = {}
    for capacity in (0, 32768):
        reasoner = Reasoner(recipe, overrides + [f"models.{r}.prefix_cache_tokens={capacity}" for r in roles])
        rows = solve_batch(reasoner, load_suite(reasoner.recipe.suite)[:3])
        runs[capacity] = ([r["answer"] for r in rows], reasoner.last_run, summarize(rows, reasoner.recipe))
    (plain, plain_run, plain_summary), (cached, cached_run, summary) = runs[0], runs[32768]
    assert plain == cached
    role = "target" if recipe == "toy-likelihood" else "draft"
    assert cached_run.roles[role].prefix_cached_tokens > 0
    assert cached_run.roles[role].prefill_tokens < plain_run.roles[role].prefill_tokens
    assert plain_run.roles[role].prefix_cached_tokens == 0
    assert summary["prefix_cached_tokens"]["draft"] > 0  # per problem, as summary.json reports it
    for r in roles:  # the per-problem books (engine and verifiers) agree with the backend's counters
        assert summary["prefix_cached_tokens"][r] > 0
        # every prompt token is booked once: prefilled, or served from the cache (or by a row that wrote ahead)
        books = [s["prefill_tokens"][r] + s.get("prefix_cached_tokens", {}).get(r, 0) for s in (summary, plain_summary)]
        assert books[0] == books[1]
        assert summary["prefill_tokens"][r] == cached_run.roles[r].prefill_tokens
    if recipe == "toy-beam":  # retained KV in bytes of the draft's KV (2 layers x 4 heads x 32, float32)
        assert summary["kv_bytes_peak"] == pytest.approx(
            summary["kv_tokens_peak"] * 2 * 2 * 4 * 32 * 4, rel=1e-3
        )  # both rounded
