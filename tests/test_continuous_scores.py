"""Scores that ride in the decode forward (``ContinuousBatch.add_score``, ``scheduler.mix_scores``): the same
log-probabilities, prefix-cache entries and generated tokens as a score forward of its own, in fewer forwards."""

import time

import pytest

from reasoner import Reasoner
from reasoner.backends import load_lm
from reasoner.backends.continuous import MIX_PADDING, GenerateRequest, mixes, padding
from reasoner.core.lm import SamplingParams
from reasoner.core.types import Problem
from reasoner.engine.scheduler import ModelWorker
from reasoner.toy import generate_problems

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PROBLEMS = [Problem(p.question, str(p.answer)) for p in generate_problems(12, seed=21)]


def target():
    return load_lm("transformers", "toy:target", "target", seed=0, prefix_cache_tokens=32768)


def test_one_padding_rule():
    """The decode batch is a group of one-token rows; each group was padded to its own longest already."""
    assert padding([(3, 1), (2, 11)]) == 3 * 10
    assert padding([(3, 1), (2, 11), (4, 5)]) == 3 * 10 + 4 * 6
    assert mixes([(4, 1), (6, 17)]) and not mixes([(5, 1), (6, 17)])  # 64 and 80 positions
    assert mixes([(1, n) for n in (10, 10, 10 + MIX_PADDING // 2)]) and not mixes([(1, 10), (1, 11 + MIX_PADDING)])


def test_scores_mixed_into_decode_forward_equal_scores_alone(toy_prompts):
    """Two models with the same history: one scores while its batch decodes two rows (the score's rows ride in the
    decode forward), the other scores alone, then decodes the rows alone. The same log-probabilities, the same
    prefix-cache entries (KV and log-probabilities), the same generated tokens, one forward fewer."""
    mixed, alone = target(), target()
    prompts = toy_prompts[:4]
    continuations = [" 12 + 7 = 19, then 19 * 3 = 57.", " 8 * 4 = 32.", " 5", " 40 - 13 = 27, so 27 / 3 = 9."]
    decoded = [mixed.encode(p) for p in toy_prompts[4:6]]
    params = SamplingParams(max_tokens=30, ignore_eos=True)
    for lm in (mixed, alone):  # the prompts' KV in the prefix cache: each score runs ~its continuation only
        lm.generate(prompts, SamplingParams(max_tokens=4, ignore_eos=True))
    before = [lm.stats.roles["target"].forward_passes for lm in (mixed, alone)]

    request = GenerateRequest(decoded, params)
    mixed.batch.add(request)
    mixed.batch.step()  # the two rows are admitted and decode
    scoring = mixed.batch.add_score(prompts, continuations)
    assert scoring.waiting and not any(scoring.results)  # its rows wait for the decode forward
    assert scoring in mixed.batch.step()
    while request.remaining:
        mixed.batch.step()
    assert mixed.stats.counters["score_rows_mixed"] == 4 and mixed.stats.counters["score_forwards_saved"] == 1

    scores = alone.score(prompts, continuations)
    generated = alone.generate(decoded, params)
    assert "score_rows_mixed" not in alone.stats.counters
    assert [len(r) for r in scoring.results] == [len(alone.encode(c)) for c in continuations]
    for got, want in zip(scoring.results, scores):
        assert got == pytest.approx(want, abs=1e-4)
    assert [u.prefill_tokens for u in scoring.usage] == [u.prefill_tokens for u in scores.usage]
    assert [r[0].token_ids for r in request.results] == [g[0].token_ids for g in generated]
    after = [lm.stats.roles["target"].forward_passes for lm in (mixed, alone)]
    assert after[0] - before[0] == after[1] - before[1] - 1

    for p, c in zip(prompts, continuations):  # the scored paths are cached as a score alone caches them
        seq = mixed.encode(p) + mixed.encode(c)
        (a, m), (b, n) = mixed.prefix_cache.lookup(seq), alone.prefix_cache.lookup(seq)
        assert m == n == len(seq)
        assert [x is None for x in a.logprobs] == [x is None for x in b.logprobs]
        assert [x for x in a.logprobs if x is not None] == pytest.approx(
            [x for x in b.logprobs if x is not None], abs=1e-4
        )
        for (ka, va), (kb, vb) in zip(a.kv, b.kv):
            assert (ka[:, :m] - kb[:, :m]).abs().max() < 1e-4 and (va[:, :m] - vb[:, :m]).abs().max() < 1e-4


def test_a_score_too_long_to_ride_runs_alone_at_once(toy_prompts):
    """Padding every live row to a long score would cost more than its own forward: it runs alone, when it is given
    (not after the next decode step), with the same result."""
    lm = target()
    request = GenerateRequest([lm.encode(p) for p in toy_prompts[:8]], SamplingParams(max_tokens=6, ignore_eos=True))
    lm.batch.add(request)
    lm.batch.step()
    pair = [toy_prompts[9]], [" 12 + 7 = 19, then 19 * 3 = 57."]  # nothing cached: ~50 tokens to run
    scoring = lm.batch.add_score(*pair)
    assert not scoring.waiting and scoring.results[0]
    assert scoring not in lm.batch.step()
    while request.remaining:
        lm.batch.step()
    assert "score_rows_mixed" not in lm.stats.counters
    assert scoring.results[0] == pytest.approx(target().score(*pair)[0], abs=1e-4)


def test_scores_riding_in_decode_forwards_save_target_forwards(toy_prompts):
    """A model's worker decodes one long row while five scores arrive one after the other: with ``mix_scores`` each
    rides in a decode forward, without it each takes a forward of its own. The same scores and tokens, five
    forwards fewer."""
    runs = {}
    for mix in (True, False):
        lm = load_lm("transformers", "toy:target", "target", seed=0)
        worker = ModelWorker(lm, mix_scores=mix)
        try:
            running = worker.submit(
                "generate", [lm.encode(toy_prompts[0])], SamplingParams(max_tokens=300, ignore_eos=True)
            )
            while not lm.batch.live:  # the row is decoding (a score arriving with it finds nothing to ride)
                time.sleep(0.001)
            scores = [worker.submit("score", [p], [" 12 + 7 = 19."]).result()[0] for p in toy_prompts[1:6]]
            assert not running.done()  # every score arrived while the row was decoding
            tokens = running.result()[0][0].token_ids
        finally:
            worker.close()
        runs[mix] = lm.stats.roles["target"].forward_passes, lm.stats.counters["score_forwards_saved"], scores, tokens
    (forwards, saved, scores, tokens), (forwards_alone, saved_alone, scores_alone, tokens_alone) = (
        runs[True],
        runs[False],
    )
    assert (saved, saved_alone) == (5, 0)
    assert forwards == forwards_alone - 5
    for got, want in zip(scores, scores_alone):
        assert got == pytest.approx(want, abs=1e-4)
    assert tokens == tokens_alone


def test_step_speculation_with_riding_scores_writes_the_same_steps():
    """Step speculation with the likelihood acceptor, its scores riding in the target's decode forward and not: the
    same steps and verdicts."""
    problems = PROBLEMS[:8]
    runs = {}
    for mix in (True, False):
        reasoner = Reasoner("toy-likelihood", ["scheduler.model_workers=thread", f"scheduler.mix_scores={mix}"])
        solutions = reasoner.solve_many(problems)
        runs[mix] = solutions, reasoner.models["target"].stats
    (mixed, with_mix), (plain, without) = runs[True], runs[False]
    for field in ("token_ids", "speculation"):
        assert [[getattr(s, field) for s in sol.steps] for sol in mixed] == [
            [getattr(s, field) for s in sol.steps] for sol in plain
        ]
    assert with_mix.counters["score_forwards_saved"] > 0 and "score_rows_mixed" not in without.counters


def test_scores_ride_without_a_prefix_cache():
    """Rows with nothing cached ride too (short pairs: the whole sequence runs in the decode forward)."""
    mixed, alone = (load_lm("transformers", "toy:target", "target", seed=0) for _ in range(2))
    prompt = mixed.encode("Q: 3 + 4 = ?\nA:")
    params = SamplingParams(max_tokens=20, ignore_eos=True)
    request = GenerateRequest([prompt], params)
    mixed.batch.add(request)
    mixed.batch.step()
    pairs = ["Q: 1 + 1", "Q: 22 * 3"], [" = 2", " = 66, so"]
    scoring = mixed.batch.add_score(*pairs)
    assert scoring.waiting
    while request.remaining:
        mixed.batch.step()
    assert mixed.stats.counters["score_rows_mixed"] == 2
    for got, want in zip(scoring.results, alone.score(*pairs)):
        assert got == pytest.approx(want, abs=1e-4)
    assert request.results[0][0].token_ids == alone.generate([prompt], params)[0][0].token_ids
